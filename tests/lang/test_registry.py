"""Language registry: packaged data, lookups and validation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from mole_lsp.lang.registry import (
    PAPER_LANGUAGES,
    Language,
    Registry,
    RegistryError,
    load_registry,
)

PACKAGED = REPO_ROOT / "packs" / "languages.toml"


@pytest.fixture(scope="module")
def reg() -> Registry:
    return load_registry()


def test_packaged_registry_loads_and_is_cached(reg: Registry) -> None:
    assert load_registry() is reg
    for lang in PAPER_LANGUAGES:
        assert lang in reg
    required = {"typescript", "php", "ruby", "kotlin", "swift", "scala", "shell", "sql"}
    assert required <= set(reg.ids)
    assert reg.ids[: len(PAPER_LANGUAGES)] == PAPER_LANGUAGES  # file order
    assert len(reg) == len(reg.ids) == len(list(reg))
    assert all(isinstance(lang, Language) for lang in reg)
    # Explicit path gives the same content.
    assert load_registry(PACKAGED).ids == reg.ids


def test_every_language_is_complete(reg: Registry) -> None:
    for lang in reg:
        assert lang.name and lang.extensions and lang.vscode_ids, lang.id
        assert all(a == a.lower() for a in lang.aliases)
        assert all(e.startswith(".") for e in lang.extensions)


@pytest.mark.parametrize(
    ("tag", "lang"),
    [
        ("c++", "cpp"),
        ("cpp", "cpp"),
        ("cc", "cpp"),
        ("cxx", "cpp"),
        ("hpp", "cpp"),
        ("c#", "csharp"),
        ("C#", "csharp"),
        ("cs", "csharp"),
        ("csharp", "csharp"),
        ("c", "c"),
        ("js", "javascript"),
        ("javascript", "javascript"),
        ("jsx", "javascript"),
        ("node", "javascript"),
        ("mjs", "javascript"),
        ("py", "python"),
        ("python", "python"),
        ("python3", "python"),
        ("Python3", "python"),
        ("py3", "python"),
        ("rs", "rust"),
        ("rust", "rust"),
        ("go", "go"),
        ("golang", "go"),
        ("sh", "shell"),
        ("bash", "shell"),
        ("zsh", "shell"),
        ("shell", "shell"),
        ("console", "shell"),
        ("ts", "typescript"),
        ("tsx", "typescript"),
        ("kt", "kotlin"),
        ("rb", "ruby"),
        ("{.python}", "python"),
        ("{.python .numberLines}", "python"),
        ("{r setup, echo=FALSE}", "r"),
        ("  python title=x.py  ", "python"),
        ("rust,ignore", "rust"),
        ("python:src/main.py", "python"),
        ("language-python", "python"),
        ("objective-c", "objective-c"),
        ("objc", "objective-c"),
    ],
)
def test_fence_tags(reg: Registry, tag: str, lang: str) -> None:
    assert reg.by_fence_tag(tag) == lang


@pytest.mark.parametrize("tag", ["", "   ", "text", "mermaid", "nl", "unknown", "{}", "."])
def test_unknown_fence_tags(reg: Registry, tag: str) -> None:
    assert reg.by_fence_tag(tag) is None


def test_vscode_ids(reg: Registry) -> None:
    assert reg.by_vscode_id("typescriptreact") == "typescript"
    assert reg.by_vscode_id("javascriptreact") == "javascript"
    assert reg.by_vscode_id("shellscript") == "shell"
    assert reg.by_vscode_id("csharp") == "csharp"
    assert reg.by_vscode_id("cpp") == "cpp"
    assert reg.by_vscode_id("plaintext") is None


def test_paths(reg: Registry) -> None:
    assert reg.by_path("src/main.rs") == "rust"
    assert reg.by_path(Path("a/b/Widget.TSX")) == "typescript"
    assert reg.by_path("x.d.ts") == "typescript"
    assert reg.by_path("lib.h") == "c"
    assert reg.by_path("lib.hpp") == "cpp"
    assert reg.by_path("Program.cs") == "csharp"
    assert reg.by_path("home/.bashrc") == "shell"
    assert reg.by_path("Makefile") is None
    assert reg.by_path("notes.txt") is None
    assert reg.by_path("") is None


def test_resolve(reg: Registry) -> None:
    assert reg.resolve("C++") == "cpp"
    assert reg.resolve("c#") == "csharp"
    assert reg.resolve("JavaScript") == "javascript"
    assert reg.resolve("javascriptreact") == "javascript"
    assert reg.resolve("Objective-C++") == "objective-cpp"
    assert reg.resolve(" Python ") == "python"
    assert reg.resolve("cobol") is None


def test_fallback_chains(reg: Registry) -> None:
    assert reg.fallback_chain("typescript") == ["typescript", "javascript"]
    assert reg.fallback_chain("kotlin") == ["kotlin", "java"]
    assert reg.fallback_chain("scala") == ["scala", "java"]
    assert reg.fallback_chain("c") == ["c", "cpp"]
    assert reg.fallback_chain("objective-c") == ["objective-c", "c", "cpp"]
    assert reg.fallback_chain("python") == ["python"]
    with pytest.raises(KeyError):
        reg.fallback_chain("cobol")


def test_get_lists_known_ids(reg: Registry) -> None:
    assert reg.get("rust").name == "Rust"
    with pytest.raises(RegistryError, match="known ids: c, cpp"):
        reg.get("cobol")
    with pytest.raises(KeyError):
        reg.get("cobol")


def test_language_accepts_lists_and_is_hashable() -> None:
    lang = Language("x", "X", ["x"], ["xx"], [".x"])
    assert lang.aliases == ("xx",)
    assert hash(lang) == hash(Language("x", "X", ("x",), ("xx",), (".x",)))
    with_features = Language("x", "X", detect=[["x+", 2]], interpreters=["xr"])
    assert with_features.detect == (("x+", 2),) and with_features.interpreters == ("xr",)
    assert hash(with_features) == hash(Language("x", "X", detect=(("x+", 2),), interpreters=("xr",)))


# -- validation --------------------------------------------------------------------------------


def _lang(id: str, **kw) -> Language:
    return Language(id=id, name=kw.pop("name", id.upper()), **kw)


@pytest.mark.parametrize(
    ("langs", "message"),
    [
        ([_lang("a"), _lang("a")], "duplicate language id 'a'"),
        ([_lang("a", aliases=("z",)), _lang("b", aliases=("z",))], "fence alias 'z'"),
        ([_lang("a"), _lang("b", aliases=("a",))], "fence alias 'a'"),
        ([_lang("a", vscode_ids=("v",)), _lang("b", vscode_ids=("v",))], "VS Code id 'v'"),
        ([_lang("a", extensions=(".q",)), _lang("b", extensions=(".Q",))], "extension '.q'"),
        ([_lang("a", name="Same"), _lang("b", name="same")], "name 'same'"),
        ([_lang("a", fallback="zz")], "fallback 'zz' is not a known language"),
        ([_lang("a", fallback="b"), _lang("b", fallback="a")], "fallback cycle: a -> b -> a"),
        ([_lang("a", fallback="a")], "cannot fall back to itself"),
        ([_lang("nl")], "reserved"),
        ([_lang("unknown")], "reserved"),
        ([_lang("a", aliases=("unknown",))], "reserved"),
        ([_lang("Py")], "lower case"),
        ([_lang("a", aliases=("Py",))], "lower case"),
        ([_lang("a", aliases=("py thon",))], "without spaces"),
        ([_lang("a", extensions=("py",))], "'.ext'"),
        ([_lang("a", name=" ")], "name must be"),
        ([_lang("a", detect=(("(", 1),))], "language 'a': detect feature #1 '\\(' is not a valid regex"),
        ([_lang("a", detect=(("x", 0),))], "language 'a': .*weight must be a non-zero number"),
        ([_lang("a", detect=(("x", True),))], "weight must be"),
        ([_lang("a", detect=(("x", float("nan")),))], "weight must be"),
        ([_lang("a", detect=(("x", "3"),))], "weight must be"),
        ([_lang("a", detect=(("x",),))], r"\[regex, weight\] pair"),
        ([_lang("a", interpreters=("Python",))], "interpreter 'Python' must be a lower-case name"),
        ([_lang("a", interpreters=("python3",))], "without version digits"),
        ([_lang("a", interpreters=("x",)), _lang("b", interpreters=("x",))], "interpreter 'x'"),
    ],
)
def test_invalid_registries(langs: list[Language], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        Registry(langs)


def test_registry_error_is_value_error() -> None:
    assert issubclass(RegistryError, ValueError)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "languages.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_custom_file_both_layouts(tmp_path: Path) -> None:
    arrays = _write(
        tmp_path,
        '[[language]]\nid = "b"\nname = "B"\naliases = ["bee"]\nextensions = [".b"]\n'
        '[[language]]\nid = "a"\nname = "A"\nfallback = "b"\nline_comment = "//"\n',
    )
    reg = load_registry(arrays)
    assert reg.ids == ("b", "a")
    assert reg.get("a").line_comment == "//"
    assert reg.get("b").line_comment is None
    assert reg.fallback_chain("a") == ["a", "b"]
    assert reg.by_fence_tag("BEE") == "b"
    tables = _write(tmp_path, '[language.q]\nname = "Q"\n[language.r]\nname = "R"\nfallback = "q"\n')
    assert load_registry(tables).fallback_chain("r") == ["r", "q"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[language]\n", "invalid TOML"),
        ('[[language]]\nid = "a"\n', r"#1 \(id 'a'\): missing field\(s\) name"),
        ('[[language]]\nid = "a"\nname = "A"\nalias = ["x"]\n', "unknown field"),
        ('[[language]]\nid = "a"\nname = "A"\naliases = "x"\n', "aliases must be a list"),
        ('[[language]]\nid = "a"\nname = "A"\n[[language]]\nid = 3\nname = "B"\n', "#2.*id must be"),
        ('[language.a]\nid = "b"\nname = "A"\n', "different id"),
        ('lang = "x"\n', r"expected \[\[language\]\]"),
        ('[[language]]\nid = "a"\nname = "A"\nfallback = "z"\n', "fallback 'z'"),
        ('[[language]]\nid = "a"\nname = "A"\ndetect = ["x"]\n', r"detect must be a list of \[regex, weight\]"),
        ("[[language]]\nid = 'a'\nname = 'A'\ndetect = [['[a-', 1]]\n", r"language 'a'.*'\[a-' is not a valid regex"),
        ("[[language]]\nid = 'a'\nname = 'A'\ndetect = [['a', 'b']]\n", "language 'a'.*weight must be"),
        ('[[language]]\nid = "a"\nname = "A"\ninterpreters = "sh"\n', "interpreters must be a list"),
    ],
)
def test_malformed_files_name_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(RegistryError, match=message) as info:
        load_registry(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "nope.toml")


def test_packaged_file_is_valid_toml_with_only_known_fields() -> None:
    data = tomllib.loads(PACKAGED.read_text(encoding="utf-8"))
    assert isinstance(data["language"], list)
