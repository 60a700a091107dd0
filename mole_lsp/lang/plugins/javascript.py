"""JavaScript: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
from mole_lsp.lang.plugins.mining import Corpus, Grammar, Node, TreeSitterMiner, javadoc_block

# Shared with TypeScript, whose grammar extends this one.
FUNCTIONS = frozenset({"function_declaration", "generator_function_declaration", "method_definition"})
WRAPPERS = frozenset({"export_statement"})
BINDINGS = frozenset({"lexical_declaration", "variable_declaration", "expression_statement"})
_FUNCTION_VALUES = frozenset({"function_expression", "function", "arrow_function", "generator_function"})


def bind(node: Node) -> tuple[Node, Node | None] | None:
    """``const f = () => ...`` and ``exports.f = function () {...}``: (the function value, its name node)."""
    if node.type in ("lexical_declaration", "variable_declaration"):
        decls = [c for c in node.named_children if c.type == "variable_declarator"]
        if len(decls) == 1:
            value = decls[0].child_by_field_name("value")
            if value is not None and value.type in _FUNCTION_VALUES:
                return value, decls[0].child_by_field_name("name")
        return None
    expr = node.named_children[0] if node.named_child_count else None  # an expression_statement
    if expr is not None and expr.type == "assignment_expression":
        right = expr.child_by_field_name("right")
        if right is not None and right.type in _FUNCTION_VALUES:
            left = expr.child_by_field_name("left")
            return right, (left.child_by_field_name("property") if left is not None else None)
    return None


def miner(grammar: Grammar) -> TreeSitterMiner:
    """The JavaScript-family miner for ``grammar`` (JavaScript, TypeScript, TSX)."""
    return TreeSitterMiner(
        grammar=grammar,
        functions=FUNCTIONS,
        comments=frozenset({"comment"}),
        doc=javadoc_block,
        wrappers=WRAPPERS,
        bindings=BINDINGS,
        bind=bind,
    )


CORPUS = Corpus(miner=miner(Grammar("tree_sitter_javascript")))

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------

import re  # noqa: E402 - this section follows the corpus section's code

from mole_lsp.lang.plugins.execution import Lexicon, NpmPackages, Program, Toolchain, Verdicts  # noqa: E402

TOOLCHAIN = Toolchain(
    source="prog.js", packages="nodejs", run_tool="node",
    run=lambda b: [b.interpreter, f"--max-old-space-size={max(64, b.memory_mb // 2)}", "prog.js"],
    env={"UV_THREADPOOL_SIZE": "2"}, version=("node", "--version"),
    # HumanEval-X JavaScript/162 uses js-md5, pinned to the release current when the benchmark was written.
    libraries=NpmPackages({"js-md5": "0.7.3"}),
    verdicts=Verdicts(failure=("AssertionError",),
                      memory=("heap out of memory", "Fatal process out of memory", "Fatal JavaScript invalid size"),
                      location=re.compile(r"^\s*at (?!console\.assert\b).*?prog\.js:(\d+):\d+", re.M),
                      # The uncaught error, not the "Node.js v20..." banner Node prints last.
                      error_line=re.compile(r"^[\w.$]*(?:Error|Exception)\b(?: \[\w+\])?: .*$", re.M),
                      noise=re.compile(r"^(?:Node\.js v\d|\(Use `node --trace-uncaught)")),
)

# console.assert only logs; HumanEval-X's JavaScript tests rely on it, so make a false assertion fatal.
_HEADER = ("console.assert = (cond, ...msg) => {\n"
           "  if (!cond) { const e = new Error(['Assertion failed', ...msg].join(' ')); e.name = 'AssertionError'; throw e; }\n"
           "};\n")
_FUNCTION_VALUE = r"(?:async[ \t]*)?(?:function\b|\(|[A-Za-z_$][\w$]*[ \t]*=>)"  # a function, not any variable

PROGRAM = Program(
    lexicon=Lexicon(starts=re.compile(r"//|/\*|[\"'`/]"), char_literals=False, backtick="template",
                    regex_literals=True),
    definition=lambda name: re.compile(rf"\bfunction\b[ \t]*\*?[ \t]*({name})[ \t]*\(|"
                                       rf"\b(?:const|let|var)[ \t]+({name})[ \t]*=[ \t]*{_FUNCTION_VALUE}"),
    header_line=re.compile(r"^\s*(const|let|var)\s+\w+\s*=\s*require\(.*\)\s*;?\s*$"),
    assemble=lambda a, ops: _HEADER + a.source + "\n" + a.test,
    trailing_semicolon=True,
    humanevalpack_config="js",
)
