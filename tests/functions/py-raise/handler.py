"""Raises an exception from the handler: the invoke ends with an Unhandled function error."""


class PaymentDeclined(Exception):
    pass


def handler(event, context):
    if isinstance(event, dict) and event.get("ok"):
        return {"ok": True}
    raise PaymentDeclined("card 4242 declined")
