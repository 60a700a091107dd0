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
