"""Gateway adapters (one module per gateway, behind `base.Gateway`) and the local sandbox."""
