"""Imports a module that does not exist: init fails with Runtime.ImportModuleError."""

import wisp_module_that_does_not_exist  # noqa: F401


def handler(event, context):
    return "unreachable"
