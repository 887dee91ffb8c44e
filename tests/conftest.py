"""Suite-wide settings: hypothesis never fails a test for being slow on a busy machine (the
suite asserts on behaviour, never on timings), and examples stay bounded."""

from hypothesis import settings

settings.register_profile("backhaul", deadline=None, print_blob=True)
settings.load_profile("backhaul")
