"""The serve extra's libraries, imported where they are needed, or one sentence saying how to get them."""
from __future__ import annotations

import importlib

from contract.errors import UserError

# module -> the distribution pip installs it from
DISTRIBUTIONS = {"starlette": "starlette", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client",
                 "python_multipart": "python-multipart"}


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"'gamma-edge serve' needs the package '{DISTRIBUTIONS.get(module, module)}', which is not "
                        f"installed; install the server with: pip install 'gamma-edge[serve]'") from None
