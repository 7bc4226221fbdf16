"""The ComfyUI nodes (classic V1 API, ComfyUI ≥ 0.3.15): one module per node, registered here under the
type names ``protocol.NODE_TYPES`` gives (the JS reads the same names).

Each node declares its inputs and calls one function of ``loop`` (generate, update, export) or
``service`` (open, record, action); see ``common`` for what they share.
"""
from __future__ import annotations

from .export_node import PAPAExportLoRA
from .generate_node import PAPAGenerateBatch
from .protocol import NODE_TYPES
from .record_node import PAPARecordPreference
from .session_nodes import PAPASession, PAPASessionAction
from .update_node import PAPAUpdate

_NODES = {  # role -> (class, display name)
    "session": (PAPASession, "PAPA Session"),
    "generate": (PAPAGenerateBatch, "PAPA Generate Batch"),
    "record": (PAPARecordPreference, "PAPA Record Preference"),
    "update": (PAPAUpdate, "PAPA Update"),
    "export": (PAPAExportLoRA, "PAPA Export LoRA"),
    "action": (PAPASessionAction, "PAPA Undo / Reset"),
}
NODE_CLASS_MAPPINGS = {NODE_TYPES[role]: cls for role, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_TYPES[role]: name for role, (_, name) in _NODES.items()}
