"""C#, the language added by following docs/ADD_A_LANGUAGE.md: the editor's document resolves to it, the
detector and the fence parser name it, and engine completions route it to its expert (or say that
there is none)."""

from __future__ import annotations

import lsp_fixtures
import pytest
from lsp_fixtures import build_tiny_world, load_tiny_base, tiny_world  # noqa: F401

from mole_lsp.engine.engine import Engine
from mole_lsp.engine.language import resolve_document_language
from mole_lsp.engine.sources import FolderPacks
from mole_lsp.lang.detect import detect_language
from mole_lsp.lang.fence import label_chars
from mole_lsp.lang.registry import load_registry

CS_PREFIX = "using System;\n\npublic static class Program\n{\n    public static void Main()\n    {\n        "
CS_DOCUMENT = CS_PREFIX + "Console.WriteLine(\"hi\");\n    }\n}\n"


def test_a_csharp_document_resolves_to_csharp() -> None:
    assert resolve_document_language("csharp") == "csharp"
    assert resolve_document_language(None, "src/App/Program.cs") == "csharp"
    assert resolve_document_language("plaintext", "build.csx") == "csharp"
    # No languageId and no known file name: the detector reads the text.
    assert resolve_document_language(None, "untitled-1", CS_DOCUMENT) == "csharp"
    assert detect_language(CS_DOCUMENT)[0] == "csharp"


def test_csharp_fences_are_csharp_code() -> None:
    reg = load_registry()
    assert {reg.by_fence_tag(t) for t in ("cs", "c#", "C#", "csharp", "{.cs}")} == {"csharp"}
    text = "Like this:\n```c#\nint x = 1;\n```\n"
    labels = label_chars(text)
    body = text.index("int")
    assert set(labels[body : text.index("```\n", body)]) == {"csharp"}
    assert labels[0] == "nl"


def test_completion_without_a_csharp_pack_is_shared_only(tiny_world) -> None:  # noqa: F811
    model, tok = load_tiny_base(tiny_world)
    engine = Engine(model, tok, packs=FolderPacks(tiny_world.packs_dir))
    r = engine.complete(CS_PREFIX, "", resolve_document_language("csharp"), max_new_tokens=3)
    assert r.language == "csharp" and r.expert is None
    assert set(r.routes) == {"shared"} and set(r.labels) == {"csharp"}


@pytest.fixture(scope="module")
def csharp_world(tmp_path_factory: pytest.TempPathFactory) -> lsp_fixtures.TinyWorld:
    """A tiny world whose packs include a C# expert."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lsp_fixtures, "PACK_LANGUAGES", ("python", "csharp"))
        return build_tiny_world(tmp_path_factory.mktemp("csharp-world"))


def test_completion_routes_csharp_to_its_expert(csharp_world: lsp_fixtures.TinyWorld) -> None:
    model, tok = load_tiny_base(csharp_world)
    engine = Engine(model, tok, packs=FolderPacks(csharp_world.packs_dir))
    language = resolve_document_language(None, "Program.cs")
    r = engine.complete(CS_PREFIX, "\n    }\n}\n", language, max_new_tokens=4)
    assert r.mode == "completion" and r.language == "csharp" and r.expert == "csharp"
    assert r.routes and set(r.routes) == {"csharp"}
    assert engine.loaded_experts == ["csharp"]
    # A ```cs fence in a chat prompt switches the generated code to the C# expert too.
    r = engine.generate("Here:\n```cs\nint x = ", mode="automated", max_new_tokens=3)
    assert r.routes[0] == "csharp"
