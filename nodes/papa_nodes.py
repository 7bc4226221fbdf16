"""The ComfyUI nodes (classic V1 API, ComfyUI ≥ 0.3.15): one module per node, registered here.

Each node is a declaration over papa_core and ``service``; see ``common`` for what they share.
"""
from __future__ import annotations

from ..papa_core.update import UPDATE_PRESETS
from .common import CATEGORY, SESSION, SessionRef
from .export_node import PAPAExportLoRA
from .generate_node import PAPAGenerateBatch
from .record_node import PAPARecordPreference
from .service import apply_session_action
from .session_nodes import SESSION_ACTIONS, PAPASession, PAPASessionAction
from .update_node import ALGORITHMS, UPDATE_PRESET_NAMES, PAPAUpdate, build_update_config

__all__ = ["CATEGORY", "SESSION", "SessionRef", "UPDATE_PRESETS", "ALGORITHMS", "UPDATE_PRESET_NAMES",
           "SESSION_ACTIONS", "apply_session_action", "build_update_config", "NODE_CLASS_MAPPINGS",
           "NODE_DISPLAY_NAME_MAPPINGS"]

NODE_CLASS_MAPPINGS = {
    "PAPA_Session": PAPASession,
    "PAPA_GenerateBatch": PAPAGenerateBatch,
    "PAPA_RecordPreference": PAPARecordPreference,
    "PAPA_Update": PAPAUpdate,
    "PAPA_ExportLoRA": PAPAExportLoRA,
    "PAPA_SessionAction": PAPASessionAction,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PAPA_Session": "PAPA Session",
    "PAPA_GenerateBatch": "PAPA Generate Batch",
    "PAPA_RecordPreference": "PAPA Record Preference",
    "PAPA_Update": "PAPA Update",
    "PAPA_ExportLoRA": "PAPA Export LoRA",
    "PAPA_SessionAction": "PAPA Undo / Reset",
}
