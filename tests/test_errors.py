"""mole_lsp.errors: which exceptions are the user's to fix, and their one-line descriptions."""

from __future__ import annotations

from mole_lsp.errors import UserError, is_user_error, one_line


def test_one_line_takes_the_first_non_blank_lines():
    e = RuntimeError("\n  first line  \n\n second\nthird\nfourth\n")
    assert one_line(e) == "first line"
    assert one_line(e, 3) == "first line second third"
    assert one_line(RuntimeError("")) == "RuntimeError"
    assert one_line(KeyError()) == "KeyError"


def test_user_errors_by_class_name():
    class StoreError(RuntimeError):
        pass

    assert is_user_error(UserError("x")) and is_user_error(FileNotFoundError()) and is_user_error(StoreError())
    assert not is_user_error(RuntimeError("bug")) and not is_user_error(KeyError("k"))


def test_value_errors_are_bugs_unless_typed():
    from mole_lsp.lang.registry import RegistryError
    from mole_lsp.packs.format import PackError

    assert not is_user_error(ValueError("a bug")) and not is_user_error(OverflowError("a bug"))
    assert not is_user_error(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"))  # the CLI says which file
    assert is_user_error(PackError("bad pack")) and is_user_error(RegistryError("bad registry"))
