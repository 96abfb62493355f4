"""Entry points: settings, the CLI and the embedded development stack."""
