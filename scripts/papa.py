"""The webui entry (Stable Diffusion WebUI Forge loads every ``scripts/*.py`` of an extension as a
script): the PAPA panel in txt2img, and the PAPA part of each txt2img request. The work is in
``papa_webui``; Forge puts this extension's folder on the import path, so it imports as a package.

Headless use: ``/sdapi/v1/txt2img`` with ``"alwayson_scripts": {"PAPA": {"args": [enabled, session,
feedback, update, strength, export, preset]}}`` (``papa_webui.loop.Request``). Before sampling it records
``feedback`` on the pending batch, runs the update and the export; then it samples with the session's
LoRA and records the batch. An error stops the request before sampling (no images) and is reported
as ``PAPA error`` in the response's parameters.
"""
import logging


from modules import scripts, shared

from papa_webui import loop, panel

log = logging.getLogger("papa")


class PapaScript(scripts.Script):
    def title(self):
        return "PAPA"

    def show(self, is_img2img):
        return False if is_img2img else scripts.AlwaysVisible

    def ui(self, is_img2img):
        args, self._show_batch = panel.build()
        return args

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") == "txt2img_gallery" and getattr(self, "_show_batch", None):
            self._show_batch(component.change)  # a finished generation shows its batch in the panel

    def process(self, p, *args):
        self._req = None
        try:
            req = loop.Request.from_args(args)
            if not req.enabled:
                return
            loop.check_processing(p)
            if req.feedback:
                loop.answer(req.session, req.feedback)
            if req.update:
                loop.run_update(p.sd_model, req.session, req.strength, req.preset)
            if req.export:
                p.extra_generation_params["PAPA export"] = loop.export(req.session, req.export).name
            self._req = req
        except Exception as e:  # noqa: BLE001 — Forge would log it and sample without PAPA: refuse instead
            self._refuse(p, e)

    def process_before_every_sampling(self, p, *args, **kwargs):
        if self._req is not None:
            try:
                loop.sample_with_lora(p, self._req.session)
            except Exception as e:  # noqa: BLE001
                self._refuse(p, e)

    def post_sample(self, p, ps, *args):
        if self._req is not None and not shared.state.interrupted:
            r = loop.record_batch(p, self._req.session, ps.samples)
            p.extra_generation_params["PAPA"] = f"{self._req.session} round {r.index} batch {r.batch_id}"

    def postprocess(self, p, processed, *args):
        if self._req is not None and processed.images:
            sess = loop.store().get(self._req.session)
            if sess.pending_round is not None:
                panel.remember_batch(sess.name, sess.pending_round.batch_id, processed.images[: p.batch_size])

    def _refuse(self, p, error: Exception) -> None:
        """Stop this request before anything is sampled, and say why in its parameters and comments."""
        self._req = None
        log.error("PAPA: %s", error)
        p.extra_generation_params["PAPA error"] = str(error)
        p.comment(f"PAPA error: {error}")
        shared.state.interrupted = True
