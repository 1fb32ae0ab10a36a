"""Import a ``tether.App`` from an app directory and a ``module:attribute`` reference."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

from tether._bundle import check_ref
from tether.errors import BundleError
from tether.sdk.app import App


def load_app(root: Path, ref: str) -> App:
    """Import ``ref`` with ``root`` first on ``sys.path`` and return the App it names.

    Raises:
        BundleError: the module cannot be imported or the attribute is not a ``tether.App``.
    """
    module_name, attribute = check_ref(ref).split(":")
    sys.path.insert(0, str(root.resolve()))
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit):  # a module that calls sys.exit() at import is a bad bundle too
        raise BundleError(f"cannot import {module_name} from the app:\n{traceback.format_exc(limit=-3)}") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise BundleError(f"{ref} is not a tether.App (found {type(app).__name__})")
    return app
