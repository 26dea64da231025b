"""The name the designs import; the IRON model needs nothing more."""


class bfloat16:
    pass
