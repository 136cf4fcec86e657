"""Defines no `handler`: init fails with Runtime.HandlerNotFound."""


def some_other_function(event, context):
    return "not the configured handler"
