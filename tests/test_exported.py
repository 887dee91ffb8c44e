import backhaul
from backhaul import errors


def test_root_exports_are_what_we_mean():
    assert set(backhaul.__all__) == {"BackhaulError", "ConfigError", "__version__"}


def test_every_error_is_a_backhaul_error():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.BackhaulError), name
