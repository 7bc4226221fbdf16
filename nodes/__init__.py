"""ComfyUI node layer over papa_core: node classes, the session store, routes and the message protocol."""
