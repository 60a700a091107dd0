"""Light language detector for untagged code (DESIGN §6): weighted regex features, no model.

Used only when the language of a block is unknown (``` without a tag, or an unknown tag), to pick
an expert instead of the shared adapter alone. It prefers to answer None over guessing: prose,
very short snippets and close calls give None.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

from mole_lsp.lang.registry import Registry, UnknownLanguageError, load_registry

__all__ = ["detect_language", "score_languages"]

_MIN_SCORE = 3.0  # evidence needed before any answer
_MIN_CONFIDENCE = 0.45
_SINGLE_FEATURE_SCORE = 4.0  # a lone feature must be this strong (<?php, package main + ...)
_MAX_CHARS = 6000  # detection looks at the head of long inputs only
_MAX_COUNT = 3  # repeated hits of one feature saturate: 1, 1.5, 2 times its weight

# (pattern, weight) per language. Weights ~1 mark a hint, ~3 a strong sign, 4+ near proof.
# Negative weights mark syntax that the language does not have.
_FEATURES: dict[str, list[tuple[str, float]]] = {
    "python": [
        (r"^\s*def \w+\s*\(.*\)\s*(->\s*[^:]+)?:\s*(#.*)?$", 3),
        (r"^\s*class \w+(\(.*\))?:\s*$", 3),
        (r"^\s*from\s+[\w.]+\s+import\s+[\w*]", 2.5),
        (r"^\s*import\s+[\w.]+(\s+as\s+\w+)?(\s*,\s*[\w.]+)*\s*$", 1),
        (r"^\s*(if|elif|while|for|with|try|except|else|finally)\b[^{};]*:\s*(#.*)?$", 1.5),
        (r"^\s*except\b|\belif\b", 1.5),
        (r"\bself\.\w+", 1),
        (r"__name__\s*==\s*['\"]__main__['\"]", 4),
        (r"\b(None|True|False)\b", 0.7),
        (r"\blambda\s+\w*\s*:", 1.5),
        (r"\b(len|range|enumerate|isinstance)\(", 1),
        (r"\bf\"[^\"]*\{", 1),
        (r"\bprint\(", 0.5),
        (r"^\s+return\b[^;]*$", 0.5),
        (r"[;{]\s*$", -1),
    ],
    "rust": [
        (r"\bfn\s+\w+\s*(<[^>]*>)?\s*\(", 3),
        (r"\blet\s+mut\b", 3),
        (r"\bimpl\b(\s*<[^>]*>)?\s+\w+", 2),
        (r"\bpub(\(crate\))?\s+(fn|struct|enum|mod|trait|use|const)\b", 2),
        (r"\b(println|print|format|vec|panic|assert_eq|assert|write|writeln|eprintln)!\s*[(\[]", 3),
        (r"#!?\[(derive|cfg|test|allow|tokio)", 3),
        (r"&mut\s|&self\b|&'\w+", 2),
        (r"^\s*use\s+\w+(::[\w{}*, ]+)+;", 2.5),
        (r"\.unwrap\(\)|\.expect\(|\bOption<|\bResult<|\bVec<|\bSome\(|\bOk\(", 1),
        (r"\bmatch\s+[\w.&]+\s*\{", 1.5),
        (r"->\s*[\w<>&\[\]]+\s*\{", 1),
        (r"\b(i8|i16|i32|i64|i128|u8|u16|u32|u64|u128|usize|isize|f32|f64)\b|&str\b", 1.5),
        (r"\w::<|^\s*(Some|None|Ok|Err)\b.*=>", 2),
        (r"^\s+\w+:\s*[A-Z&][\w<>&']*,\s*$", 1),
    ],
    "cpp": [
        (r"^\s*#\s*include\s*<[a-z_]+>", 2.5),
        (r"\bstd::", 3),
        (r"\b(cout|cin|cerr|endl)\b", 2),
        (r"\btemplate\s*<", 3),
        (r"\btypename\b", 1.5),
        (r"\busing\s+namespace\b", 3),
        (r"\bnamespace\s+\w+\s*\{", 1),
        (r"\bclass\s+\w+\s*(final\s*)?(:\s*(public|private|protected)\s+\w+)?\s*\{", 1),
        (r"\b(nullptr|constexpr|virtual|noexcept|unique_ptr|shared_ptr)\b", 1.5),
        (r"\bauto\s*&?\s+\w+\s*[=:]", 1.5),
        (r"^\s*(public|private|protected):\s*$", 2.5),
        (r"\bint\s+main\s*\(", 1),
        (r"^\s*#\s*(define|ifndef|ifdef|endif|pragma)\b", 1),
    ],
    "c": [
        (r"^\s*#\s*include\s*[<\"][\w/]+\.h[>\"]", 2.5),
        (r"\b(printf|scanf|fprintf|sprintf|snprintf|puts|fgets)\s*\(", 1.5),
        (r"\b(malloc|calloc|realloc|free|memcpy|memset|strlen|strcpy|strcmp)\s*\(", 2),
        (r"\btypedef\s+(struct|enum|union|\w+)", 2),
        (r"\bstruct\s+\w+\s*\*|\bstruct\s+\w+\s+\w+", 1.5),
        (r"\bint\s+main\s*\(\s*(void|int\s+argc)", 2),
        (r"\bNULL\b", 1),
        (r"\bsizeof\s*\(", 1),
        (r"^\s*#\s*(define|ifndef|ifdef|endif|pragma)\b", 1),
        (r"\b(char|int|void|unsigned|long|double|float)\s*\*+\s*\w+", 1.5),
        (r"\bstd::|\bclass\s|\btemplate\s*<|\bnamespace\b|\bcout\b", -2),
    ],
    "go": [
        (r"^package\s+\w+\s*$", 3),
        (r"^\s*func\s+(\([^)]*\)\s*)?\w+\s*\(", 2),
        (r"^\s*func\s+\(\s*\w+\s+\*?\w+\s*\)", 2),
        (r":=", 2),
        (r"\bfmt\.\w+\(", 3),
        (r"^import\s+(\(\s*$|\"[\w/.]+\")", 3),
        (r"\berr\s*!=\s*nil\b", 3),
        (r"\btype\s+\w+\s+(struct|interface)\s*\{", 3),
        (r"\b(chan|defer)\b|\bgo\s+func\b|<-\s*\w+", 1.5),
        (r"\bnil\b", 0.5),
        (r"\[\]\w+\{|\bmake\(|\bappend\(", 1),
        (r"^\s+[A-Z]\w*\s+(\*?\[\]|\*|map\[)?(string|int|int64|bool|float64|error|byte)\b", 1.5),
    ],
    "java": [
        (r"\bpublic\s+(final\s+|abstract\s+)?class\s+\w+", 2),
        (r"\bSystem\.(out|err)\.print", 4),
        (r"\bpublic\s+static\s+void\s+main\s*\(\s*String", 4),
        (r"^import\s+(static\s+)?javax?\.[\w.*]+;", 4),
        (r"^import\s+[\w.*]+;\s*$", 1.5),
        (r"^package\s+[\w.]+;\s*$", 3),
        (r"@Override\b", 2),
        (
            r"\b(private|public|protected)\s+(static\s+)?(final\s+)?[A-Z]\w*(<[^>]*>)?(\[\])?\s+\w+\s*[;=(]",
            1.5,
        ),
        (r"\bboolean\b", 1.5),
        (r"\b(extends|implements)\s+\w+", 1),
        (r"\bthrows\s+\w+", 2),
        (r"\bnew\s+[A-Z]\w*(<[^>]*>)?\(", 0.5),
        (r"\.length\b|\.equals\(", 0.5),
    ],
    "csharp": [
        (r"^\s*using\s+System(\.[\w.]+)?;", 4),
        (r"^\s*using\s+[\w.]+;", 1.5),
        (r"\bnamespace\s+[\w.]+\s*(;|\{|$)", 1),
        (r"\bConsole\.(Write|WriteLine|ReadLine)\(", 4),
        (r"\bstatic\s+(async\s+)?(void|int|Task)\s+Main\s*\(", 4),
        (r"\{\s*get;\s*((private|protected|internal)\s+)?(set|init);\s*\}", 4),
        (r"\b(string|bool)\s+\w+\s*[=;,)]", 1.5),
        (r"\bforeach\s*\(\s*\w+\s+\w+\s+in\b", 3),
        (r"\bvar\s+\w+\s*=\s*new\b", 2),
        (r"\basync\s+Task\b|\bTask<", 2),
        (r"\.(Where|Select|ToList|FirstOrDefault|Any)\(", 1.5),
        (r"\bpublic\s+(static\s+|override\s+|virtual\s+|async\s+)*(void|string|int|bool)\s+[A-Z]", 1),
        (r"\b[A-Z]\w*Async\(|\b(public|private)\s+(async\s+)?Task\b", 2),
        (r"^\s*\{\s*$", 0.5),
    ],
    "javascript": [
        (r"\bconsole\.(log|error|warn|info)\(", 2.5),
        (r"\b(const|let)\s+\w+\s*=", 1),
        (r"\b(const|let)\s+[{\[][^}\]]*[}\]]\s*=", 2),
        (r"\bfunction\s*\*?\s*\w*\s*\([^)$]*\)\s*\{", 2),
        (r"=>", 0.7),
        (r"\brequire\(\s*['\"]", 2),
        (r"\bmodule\.exports\b|\bexports\.\w+\s*=", 3),
        (r"\b(document|window)\.\w+", 2),
        (r"(?<!=)(===|!==)(?!=)", 2),
        (r"^\s*import\s+.*\s+from\s+['\"]", 2),
        (r"^\s*export\s+(default|const|function|class|async)\b", 1.5),
        (r"\.then\(|\basync\s+function\b|\bawait\s+\w+", 1),
        (r"\bJSON\.(parse|stringify)\(|\bPromise\b|\.addEventListener\(|\.querySelector", 2),
        (r"\bundefined\b", 1),
    ],
    "typescript": [
        (r"\w\??:\s*(string|number|boolean|any|void|unknown|never)\b", 3),
        (r"\binterface\s+\w+\s*(extends\s+[\w, ]+)?\{", 1.5),
        (r"^\s*(export\s+)?type\s+\w+(<[^>]*>)?\s*=", 3),
        (r"\bas\s+(const|string|number|any|unknown)\b", 2),
        (r"\b(private|public|protected|readonly)\s+\w+\s*[?:]", 1.5),
        (r":\s*\w+(<[^>]*>)?\[\]", 2),
        (r"\):\s*(Promise<|string|number|boolean|void)", 2),
        (r"\bconsole\.(log|error|warn)\(|\b(const|let)\s+\w+\s*[:=]|(?<!=)===(?!=)|=>", 0.7),
        (r"^\s*import\s+.*\s+from\s+['\"]", 1),
    ],
    "php": [
        (r"<\?php", 6),
        (r"\$\w+\s*=[^=]", 1.5),
        (r"\$this->", 3),
        (r"\bfunction\s+\w+\s*\([^)]*\$", 3),
        (r"\becho\s+['\"$]", 1),
        (r"^\s*namespace\s+[\w\\]+;", 3),
        (r"^\s*use\s+\w+\\[\w\\]+;", 3),
        (r"\b(isset|empty|array_\w+|str_\w+)\s*\(", 1.5),
        (r"\$_(GET|POST|SERVER|SESSION)\b", 3),
        (r"\b(public|private|protected)\s+(static\s+)?function\b", 3),
    ],
    "ruby": [
        (r"^\s*def\s+(self\.)?\w+[?!=]?(\s*\(.*\))?\s*$", 2.5),
        (r"^\s*end\s*$", 1.5),
        (r"\bputs\b", 2),
        (r"^\s*require(_relative)?\s+['\"]", 2.5),
        (r"\battr_(accessor|reader|writer)\b", 3),
        (r"\.each(_with_index)?\s+do\s*\|", 3),
        (r"\bdo\s*\|\w+(,\s*\w+)*\|", 2),
        (r"\{\s*\|\w+(,\s*\w+)*\|", 2),
        (r"#\{[^}]*\}", 2),
        (r"\belsif\b", 1.5),
        (r"^\s*class\s+\w+\s*<\s*\w+", 3),
        (r"^\s*module\s+[A-Z]\w*\s*$", 2),
        (r"\bunless\b", 1),
        (r"@\w+\s*=", 1),
        (r":\w+\s*=>|\bnil\b", 0.5),
    ],
    "kotlin": [
        (r"\bfun\s+(<[^>]*>\s*)?[\w.]+\s*\(", 3),
        (r"\bval\s+\w+", 1.5),
        (r"\bvar\s+\w+\s*:", 1),
        (r"\bwhen\s*(\([^)]*\))?\s*\{", 2.5),
        (r"\bdata\s+class\b", 3),
        (r"\b(listOf|mapOf|setOf|mutableListOf|mutableMapOf|arrayOf)\(", 3),
        (r"\bprintln\(", 0.5),
        (r"\?\.|\?:|!!", 1),
        (r"\bcompanion\s+object\b|\blateinit\b|\bsuspend\s+fun\b", 3),
        (r"\bit\.\w+", 1),
    ],
    "swift": [
        (r"\bfunc\s+\w+\s*(<[^>]*>)?\s*\([^)]*:\s*[\w\[\]?]+", 2),
        (r"^\s*import\s+(Foundation|UIKit|SwiftUI|Combine|XCTest)\s*$", 5),
        (r"\b(guard|if)\s+let\b", 3),
        (r"\blet\s+\w+\s*:\s*[A-Z]\w*", 1.5),
        (r"\bvar\s+\w+\s*:\s*[A-Z]\w*[?!]?\s*(=|\{|$)", 1),
        (r"\\\([\w.]+\)", 2.5),
        (r"@(State|Published|Binding|objc|IBOutlet|IBAction|main|MainActor)\b", 3),
        (r"\bprotocol\s+\w+", 2),
        (r"->\s*[A-Z]\w*\??\s*\{", 1),
        (r"\bstruct\s+\w+\s*:\s*\w+", 1.5),
        (r"^\s*extension\s+\w+", 2),
    ],
    "scala": [
        (r"\bdef\s+\w+(\[[^\]]*\])?(\([^)]*\))*\s*:\s*[\w\[\], ]+\s*=", 3),
        (r"\bcase\s+class\b", 3),
        (r"\bobject\s+\w+\s*(extends\s+\w+\s*)?\{", 2),
        (r"^\s*import\s+scala\.", 4),
        (r"\bextends\s+App\b", 3),
        (r"\bval\s+\w+\s*(:\s*[\w\[\]]+\s*)?=", 1),
        (r"\bmatch\s*\{", 2.5),
        (r"^\s*case\s+[^:]*=>", 1.5),
        (r"\bimplicit\b|\bsealed\s+trait\b|^\s*trait\s+\w+", 1.5),
        (r"\b(Seq|List|Map|Option|Some)\(", 0.7),
    ],
    "shell": [
        (
            r"^\s*(sudo\s+)?(apt|apt-get|yum|dnf|brew|pip3?|npm|yarn|git|docker|kubectl|cargo|make|curl|"
            r"wget|tar|chmod|chown|mkdir|cd|ls|cp|mv|rm|export|source|echo|cat|grep|ssh|systemctl)"
            r"\b(?!\s*[(=:.])",
            2,
        ),
        (r"^\s*if\s+\[\[?\s.*\]\]?\s*;?\s*(then)?\s*$", 3),
        (r"^\s*(fi|done|esac)\s*$", 3),
        (r";\s*(then|do)\s*$", 3),
        (r"^\s*[A-Za-z_]\w*=(\S*|\"[^\"]*\"|'[^']*')\s*$", 1),
        (r"\$\(\w[^)]*\)", 1.5),
        (r"\|\s*(grep|awk|sed|xargs|sort|uniq|head|tail|wc|cut|tr|tee)\b", 2.5),
        (r"^\s*\$\s+\w+", 2),
        (r"^\s*\w+\s*\(\)\s*\{", 1),
        (r"\$\{?\w+\}?", 0.3),
    ],
    "sql": [
        (r"(?i)^\s*select\s+[^;\n]{1,300}?\sfrom\s+\w+", 3),
        (r"(?i)\bcreate\s+(table|index|view|database|schema)\b", 4),
        (r"(?i)\binsert\s+into\b", 4),
        (r"(?i)^\s*update\s+\w+\s+set\b", 4),
        (r"(?i)^\s*delete\s+from\b", 4),
        (r"\b(WHERE|JOIN|GROUP BY|ORDER BY|HAVING|VALUES|PRIMARY KEY|FOREIGN KEY|NOT NULL|VARCHAR)\b", 1),
        (r"^\s*--\s", 0.5),
    ],
    "lua": [
        (r"\blocal\s+(function\s+)?\w+", 2.5),
        (r"\bfunction\s+[\w.:]+\s*\([^)]*\)\s*$", 1.5),
        (r"\bthen\s*$", 1),
        (r"\belseif\b", 2),
        (r"~=", 2),
        (r"\b(ipairs|pairs)\s*\(", 3),
        (r"\.\.\s*['\"\w]", 0.5),
        (r"^\s*--", 0.3),
        (r"\bnil\b", 0.5),
        (r"^\s*end\s*$", 0.7),
    ],
    "perl": [
        (r"\bmy\s+[$@%]\w+", 3),
        (r"^\s*use\s+(strict|warnings)\s*;", 4),
        (r"\bsub\s+\w+\s*\{", 3),
        (r"[$@]_\b", 1.5),
        (r"=~\s*[ms]?/", 2),
        (r"\bforeach\s+my\b", 2),
        (r"\$\w+\{|\$\w+->\[", 1),
        (r"\bdie\b|\bchomp\b", 1.5),
    ],
    "r": [
        (r"\w+\s*<-\s*", 1.5),
        (r"\blibrary\(\w+\)", 4),
        (r"<-\s*function\s*\(", 4),
        (r"\bdata\.frame\(|\bggplot\(|\bc\(", 2),
        (r"%>%|%in%", 2.5),
        (r"\b(TRUE|FALSE|NA)\b", 1),
    ],
    "haskell": [
        (r"^\w+\s*::\s*", 3),
        (r"^module\s+[\w.]+(\s*\([^)]*\))?\s+where\b", 5),
        (r"^import\s+qualified\b", 4),
        (r"\bwhere\s*$", 1.5),
        (r"^data\s+\w+.*=", 2),
        (r"\b(putStrLn|mapM_|foldr|Maybe|Just|Nothing)\b", 2),
        (r"^main\s*=", 2),
        (r"\bderiving\b", 3),
    ],
    "dart": [
        (r"^\s*import\s+'(package|dart):", 5),
        (r"\bvoid\s+main\s*\(\s*\)", 1.5),
        (r"\b(Widget|StatelessWidget|StatefulWidget|BuildContext|setState)\b", 3),
        (r"\bfinal\s+\w+\s*=", 1.5),
        (r"\blate\s+\w+|\brequired\s+this\.", 3),
        (r"\bFuture<|\basync\s*\{", 2),
    ],
    "objective-c": [
        (r"^\s*#import\s+[<\"]", 4),
        (r"@(interface|implementation|end|property|synthesize)\b", 4),
        (r"\bNS[A-Z]\w+", 2),
        (r"@\"", 1.5),
    ],
    "powershell": [
        (r"\b(Get|Set|New|Remove|Write|Invoke|Start|Stop|Import|Export)-[A-Z]\w+", 4),
        (r"\s-(eq|ne|lt|gt|le|ge|like|match)\s", 2.5),
        (r"\bparam\s*\(", 2),
        (r"\$_\.|\$PSScriptRoot|\$env:", 3),
    ],
    "elixir": [
        (r"^\s*defmodule\s+[\w.]+\s+do\b", 5),
        (r"^\s*defp?\s+\w+.*\bdo\s*$", 2.5),
        (r"\|>", 1.5),
        (r"\bIO\.(puts|inspect)\b", 3),
    ],
    "julia": [
        (r"^\s*function\s+\w+\(.*\)\s*$", 1),
        (r"^\s*using\s+[A-Z]\w*(,\s*[A-Z]\w*)*\s*$", 2),
        (r"\bprintln\(", 0.5),
        (r"::\s*(Int|Float64|String|Vector)", 3),
    ],
    "ocaml": [
        (r"\blet\s+rec\b", 3),
        (r";;\s*$", 3),
        (r"\bmatch\s+\w+\s+with\b", 3),
        (r"\bPrintf\.printf\b|\bList\.(map|iter|fold_left)\b", 2),
    ],
    "fsharp": [
        (r"\bprintfn\b", 4),
        (r"\blet\s+mutable\b", 3),
        (r"^\s*open\s+System\b", 3),
        (r"\|>", 1),
    ],
    "clojure": [
        (r"^\s*\(defn-?\s+[\w-]+", 5),
        (r"^\s*\(ns\s+[\w.-]+", 5),
        (r"\(let\s+\[", 3),
    ],
    "erlang": [
        (r"^-module\(\w+\)\.", 5),
        (r"^-export\(\[", 4),
        (r"\bio:format\(", 3),
    ],
    "zig": [
        (r"@import\(\"std\"\)", 5),
        (r"\bpub\s+fn\s+main\(\)\s*!?void\b", 3),
        (r"\bcomptime\b", 3),
    ],
    "groovy": [
        (r"\bdef\s+\w+\s*=", 2),
        (r"\bprintln\s+['\"]", 2),
        (r"\b(apply\s+plugin|dependencies\s*\{|implementation\s+['\"])", 3),
    ],
    "html": [
        (r"(?i)<!DOCTYPE\s+html>|<html\b", 5),
        (r"</?(div|span|body|head|p|a|ul|li|table|script|style|button|form|input|h[1-6])\b[^>]*>", 1.5),
        (r"</\w+>\s*$", 0.5),
    ],
    "css": [
        (r"^\s*[.#]?[\w-]+([\s,>+~]+[.#:]?[\w-]+|[.#:][\w-]+)*\s*\{\s*$", 0.5),
        (
            r"\b(color|margin|padding|display|font-size|background|border|width|height|position)\s*:\s*[^;]+;",
            2,
        ),
        (r"@media\b|@import\s+url|!important", 3),
    ],
    "yaml": [
        # Keys in lower case: prose lines ("Note: ...", "- Speed: fast") start upper case.
        (r"^[a-z_][\w-]*:\s+[^;,{}()=]+$", 0.8),
        (r"^\s*-\s+[a-z_][\w-]*:\s", 1.5),
        (r"^---\s*$", 1.5),
        (r"^[a-z_][\w-]*:\s*$", 0.8),
    ],
}

# Interpreter names in a shebang line → language id.
_SHEBANG = re.compile(r"\A#![^\n]*?\b(?:env\s+(?:-S\s+)?)?([\w.+-]+)(?:\s[^\n]*)?$", re.M)
_INTERPRETERS: dict[str, str] = {
    "python": "python",
    "bash": "shell",
    "sh": "shell",
    "zsh": "shell",
    "ksh": "shell",
    "dash": "shell",
    "node": "javascript",
    "deno": "typescript",
    "ts-node": "typescript",
    "ruby": "ruby",
    "perl": "perl",
    "php": "php",
    "rscript": "r",
    "lua": "lua",
    "swift": "swift",
    "pwsh": "powershell",
    "julia": "julia",
    "elixir": "elixir",
    "escript": "erlang",
    "groovy": "groovy",
    "kotlin": "kotlin",
    "scala": "scala",
}


def _horizontal(pattern: str) -> str:
    """Keep every feature on one line: ``\\s`` → space/tab, ``[^...]`` never matches a newline.

    Besides matching what is meant, this avoids ``^\\s*`` rescanning whole blank regions from
    every line start, which is quadratic.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append((" \\t" if in_class else "[ \\t]") if pair == "\\s" else pair)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            if pattern.startswith("[^", i):  # negated classes must not run into the next line
                out.append("[^\\n")
                i += 2
                continue
        elif c == "]" and in_class and out and out[-1] != "[":
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


_COMPILED: dict[str, list[tuple[re.Pattern[str], float]]] = {
    lang: [(re.compile(_horizontal(p), re.M), w) for p, w in feats] for lang, feats in _FEATURES.items()
}
_LONG_LINE = re.compile(r"^(.{400}).*$", re.M)
# Whole-line comments hold prose that looks like anything; preprocessor lines, shebangs and Rust
# attributes (#include, #!, #[...]) are features, not comments.
_COMMENT_LINE = re.compile(
    r"^[ \t]*(//|/\*|\*(?=[ \t/]|$)"
    r"|#(?![ \t]*(include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma|import|error)\b|!|\[))"
    r".*$",
    re.M,
)


def _shebang_language(code: str) -> str | None:
    m = _SHEBANG.match(code.lstrip("\ufeff"))
    if not m:
        return None
    name = m.group(1).lower()
    name = re.sub(r"[\d.]+$", "", name)  # python3.12 → python
    return _INTERPRETERS.get(name)


def _looks_like_json(code: str) -> bool:
    s = code.strip()
    if not s or s[0] not in "[{" or s[-1] not in "]}":
        return False
    try:
        value = json.loads(s)
    except ValueError:
        return False
    return isinstance(value, dict | list) and bool(value)


def _count(pattern: re.Pattern[str], text: str) -> int:
    n = 0
    for _ in pattern.finditer(text):
        n += 1
        if n >= _MAX_COUNT:
            break
    return n


def _scores(code: str, wanted: set[str] | None) -> dict[str, tuple[float, int]]:
    """(score, number of positive feature matches) per language."""
    # Clip long lines too: features are per line, and this bounds any regex backtracking.
    text = _LONG_LINE.sub(r"\1", _COMMENT_LINE.sub("", code[:_MAX_CHARS]))
    out: dict[str, tuple[float, int]] = {}
    for lang, feats in _COMPILED.items():
        if wanted is not None and lang not in wanted:
            continue
        total = 0.0
        hits = 0
        for pattern, weight in feats:
            n = _count(pattern, text)
            if n:
                total += weight * (1 + 0.5 * (n - 1))
                hits += n if weight > 0 else 0
        out[lang] = (total, hits)
    return out


def score_languages(code: str, candidates: Iterable[str] | None = None) -> dict[str, float]:
    """Raw feature score of every language with features (restricted to ``candidates``)."""
    wanted = None if candidates is None else set(candidates)
    return {lang: score for lang, (score, _) in _scores(code, wanted).items()}


def detect_language(
    code: str, candidates: Iterable[str] | None = None, registry: Registry | None = None
) -> tuple[str, float] | None:
    """Guess the language of untagged ``code``: ``(language id, confidence in (0, 1])`` or None.

    ``candidates`` (ids or any name the registry resolves) limits the answer, e.g. to installed
    experts; only languages of ``registry`` are returned.
    """
    reg = registry if registry is not None else load_registry()
    if candidates is None:
        allowed = set(reg.ids)
    else:
        allowed = set()
        for name in candidates:
            lang = reg.resolve(name)
            if lang is None:
                raise UnknownLanguageError(
                    f"unknown candidate language {name!r}; known ids: {', '.join(reg.ids)}"
                )
            allowed.add(lang)
    if not code.strip() or not allowed:
        return None

    shebang = _shebang_language(code)
    if shebang in allowed:
        return shebang, 0.99
    if "json" in allowed and _looks_like_json(code):
        return "json", 0.95

    scores = _scores(code, allowed)
    ranked = sorted(scores.items(), key=lambda kv: kv[1][0], reverse=True)
    if not ranked:
        return None
    best_lang, (best, hits) = ranked[0]
    # One match is a phrase, not a program, unless it is near proof on its own.
    if best < _MIN_SCORE or (hits < 2 and best < _SINGLE_FEATURE_SCORE):
        return None
    second = max(ranked[1][1][0], 0.0) if len(ranked) > 1 else 0.0
    confidence = best / (best + second) * (1 - math.exp(-best / 3))
    if confidence < _MIN_CONFIDENCE:
        return None
    return best_lang, round(confidence, 3)
