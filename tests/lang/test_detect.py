"""Language detector for untagged code: handmade snippets, prose, candidates."""

from __future__ import annotations

import pytest

from mole_lsp.lang.detect import detect_language, score_languages
from mole_lsp.lang.registry import PAPER_LANGUAGES, Registry, RegistryError, load_registry

SNIPPETS: dict[str, list[str]] = {
    "python": [
        "def add(a, b):\n    return a + b\n",
        "import os\nfrom pathlib import Path\n\nfor p in Path('.').iterdir():\n    if p.is_file():\n        print(p)\n",
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
        "        self.items.append(x)\n",
        "if __name__ == '__main__':\n    main()\n",
        "try:\n    value = int(text)\nexcept ValueError:\n    value = None\n",
        'squares = [x * x for x in range(10) if x % 2]\nprint(f"{len(squares)} squares")\n',
    ],
    "rust": [
        'fn main() {\n    println!("Hello, world!");\n}\n',
        "let mut v = Vec::new();\nv.push(1);\nlet total: i32 = v.iter().sum();\n",
        "impl Point {\n    pub fn new(x: f64, y: f64) -> Self {\n        Point { x, y }\n    }\n}\n",
        "#[derive(Debug, Clone)]\nstruct User {\n    name: String,\n}\n",
        "use std::collections::HashMap;\n\nfn count(s: &str) -> HashMap<char, usize> {\n"
        "    let mut m = HashMap::new();\n    m\n}\n",
        "match opt {\n    Some(x) => x,\n    None => 0,\n}\nlet n = s.parse::<u32>().unwrap();\n",
    ],
    "cpp": [
        '#include <iostream>\n\nint main() {\n    std::cout << "hi" << std::endl;\n    return 0;\n}\n',
        "#include <vector>\nstd::vector<int> v{1, 2, 3};\nfor (auto& x : v) x *= 2;\n",
        "template <typename T>\nT max_of(T a, T b) { return a > b ? a : b; }\n",
        "class Shape {\npublic:\n    virtual double area() const = 0;\n    virtual ~Shape() = default;\n};\n",
        "using namespace std;\nint main() {\n    string s;\n    cin >> s;\n    cout << s.size();\n}\n",
    ],
    "c": [
        '#include <stdio.h>\n\nint main(void) {\n    printf("hello\\n");\n    return 0;\n}\n',
        "char *buf = malloc(n + 1);\nif (buf == NULL) return -1;\nmemcpy(buf, src, n);\nfree(buf);\n",
        "typedef struct node {\n    int value;\n    struct node *next;\n} node_t;\n",
        "#include <stdlib.h>\n#include <string.h>\n\nsize_t len = strlen(s);\nint *a = calloc(len, sizeof(int));\n",
    ],
    "go": [
        'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello")\n}\n',
        'func (s *Server) Start() error {\n\tln, err := net.Listen("tcp", s.addr)\n\tif err != nil {\n'
        "\t\treturn err\n\t}\n\tdefer ln.Close()\n\treturn nil\n}\n",
        "type User struct {\n\tName string\n\tAge  int\n}\n",
        "ch := make(chan int)\ngo func() { ch <- 42 }()\nv := <-ch\n",
    ],
    "java": [
        'public class Hello {\n    public static void main(String[] args) {\n        System.out.println("hi");\n'
        "    }\n}\n",
        "import java.util.ArrayList;\nimport java.util.List;\n\nList<String> names = new ArrayList<>();\n",
        "@Override\npublic boolean equals(Object o) {\n    if (this == o) return true;\n    return false;\n}\n",
        "package com.example.demo;\n\npublic interface Repository {\n    void save(String item) throws IOException;\n}\n",
    ],
    "csharp": [
        'using System;\n\nclass Program {\n    static void Main(string[] args) {\n        Console.WriteLine("hi");\n'
        "    }\n}\n",
        "public class Person\n{\n    public string Name { get; set; }\n    public int Age { get; set; }\n}\n",
        "var adults = people.Where(p => p.Age >= 18).Select(p => p.Name).ToList();\n"
        "foreach (var name in adults)\n    Console.WriteLine(name);\n",
        "public async Task<int> LoadAsync()\n{\n    var data = await client.GetStringAsync(url);\n"
        "    return data.Length;\n}\n",
    ],
    "javascript": [
        "const add = (a, b) => a + b;\nconsole.log(add(1, 2));\n",
        "function greet(name) {\n  return 'Hello ' + name;\n}\nmodule.exports = { greet };\n",
        "const fs = require('fs');\nfs.readFile('a.txt', 'utf8', (err, data) => {\n  if (err) throw err;\n});\n",
        "document.querySelector('#btn').addEventListener('click', () => {\n  window.alert('hi');\n});\n",
        "import React from 'react';\nexport default function App() {\n  const [n, setN] = useState(0);\n}\n",
    ],
    "typescript": [
        "interface User {\n  name: string;\n  age: number;\n}\n\nfunction greet(u: User): string {\n"
        "  return `hi ${u.name}`;\n}\n",
        "type Result<T> = { ok: true; value: T } | { ok: false; error: string };\n",
        "export class Service {\n  constructor(private readonly http: HttpClient) {}\n"
        "  async load(id: number): Promise<Item[]> {\n    return [];\n  }\n}\n",
    ],
    "php": [
        '<?php\necho "Hello";\n',
        "function total($items) {\n    $sum = 0;\n    foreach ($items as $item) {\n        $sum += $item;\n"
        "    }\n    return $sum;\n}\n",
        "class User {\n    public function getName() {\n        return $this->name;\n    }\n}\n",
    ],
    "ruby": [
        'def greet(name)\n  puts "Hello #{name}"\nend\n',
        "class Dog < Animal\n  attr_reader :name\n\n  def initialize(name)\n    @name = name\n  end\nend\n",
        "[1, 2, 3].each do |x|\n  puts x * 2\nend\n",
    ],
    "kotlin": [
        'fun main() {\n    val names = listOf("a", "b")\n    println(names)\n}\n',
        "data class User(val name: String, val age: Int)\n",
        'when (x) {\n    1 -> println("one")\n    else -> println("other")\n}\nval n = s?.length ?: 0\n',
    ],
    "swift": [
        'import Foundation\n\nlet name: String = "x"\nprint("Hello, \\(name)")\n',
        'func greet(person: String) -> String {\n    return "Hello, " + person\n}\nguard let x = y else { return }\n',
        "struct ContentView: View {\n    @State private var count = 0\n}\n",
    ],
    "scala": [
        'object Main extends App {\n  println("hi")\n}\n',
        "case class Point(x: Int, y: Int)\ndef dist(p: Point): Double = math.sqrt(p.x * p.x + p.y * p.y)\n",
        'x match {\n  case 1 => "one"\n  case _ => "many"\n}\n',
    ],
    "shell": [
        "#!/bin/bash\necho hello\n",
        "sudo apt-get update\nsudo apt-get install -y curl\n",
        'for f in *.txt; do\n  echo "$f"\ndone\n',
        'if [ -z "$HOME" ]; then\n  echo "no home"\nfi\n',
        "cat access.log | grep 404 | wc -l\n",
    ],
    "sql": [
        "SELECT name, age FROM users WHERE age > 18 ORDER BY name;\n",
        "CREATE TABLE users (\n  id INTEGER PRIMARY KEY,\n  name VARCHAR(100) NOT NULL\n);\n",
        "INSERT INTO users (name) VALUES ('bob');\n",
    ],
    "lua": [
        "local function greet(name)\n  print('hi ' .. name)\nend\n\nfor i, v in ipairs(t) do\n  greet(v)\nend\n",
    ],
    "perl": [
        'use strict;\nuse warnings;\n\nmy $name = shift;\nprint "Hello $name\\n";\n',
    ],
    "haskell": [
        'module Main where\n\nmain :: IO ()\nmain = putStrLn "hi"\n',
    ],
    "r": [
        "library(ggplot2)\ndf <- data.frame(x = c(1, 2, 3))\n",
    ],
    "html": [
        '<!DOCTYPE html>\n<html>\n  <body>\n    <div class="x">hi</div>\n  </body>\n</html>\n',
    ],
    "json": [
        '{\n  "name": "demo",\n  "version": "1.0.0",\n  "dependencies": {}\n}\n',
    ],
}

CASES = [(lang, code) for lang, codes in SNIPPETS.items() for code in codes]


@pytest.mark.parametrize(("lang", "code"), CASES, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(CASES)])
def test_snippets(lang: str, code: str) -> None:
    result = detect_language(code)
    assert result is not None, score_languages(code)
    assert result[0] == lang, sorted(score_languages(code).items(), key=lambda kv: -kv[1])[:3]
    assert 0 < result[1] <= 1


def test_paper_languages_all_covered() -> None:
    assert set(PAPER_LANGUAGES) <= set(SNIPPETS)


PROSE = [
    "",
    "   \n",
    "Hello! How can I help you today?",
    "The function returns the sum of two numbers. If the list is empty, it returns zero instead.",
    "To fix this, select the files from the list and import them into your project.",
    "Note: this is important.\nAlso: remember to restart the editor.",
    "First, install the package. Then restart the server and open the settings page.",
    "Let me explain: the loop runs once for each item, and the result is printed at the end.",
    "Das ist ein kurzer deutscher Satz über Programmierung.",
    "x",
    "print(x)",
    "In Rust, you declare a mutable variable with let mut. Borrows are checked at compile time.",
    "Python uses indentation instead of braces. Functions are defined with def and classes with class.",
    "Here's how it works:\n\n1. The `main` function reads the input.\n2. Then it calls `parse()`.\n",
    "Key points:\n- Speed: fast\n- Memory: low\n- Safety: high\n",
    "Summary: the patch fixes the crash.\nReason: a null pointer was dereferenced.\nImpact: none.",
    "You can use SELECT to pick columns from a table, and WHERE to filter rows.",
    "// ======== section ========\n// see === and !== below\n",
]


@pytest.mark.parametrize("text", PROSE)
def test_prose_is_not_code(text: str) -> None:
    assert detect_language(text) is None


def test_candidates_restrict_the_answer() -> None:
    code = '#include <stdio.h>\nint main(void) {\n    printf("x");\n    return 0;\n}\n'
    assert detect_language(code)[0] == "c"
    # Restricted to C++ and Rust, the C snippet is still valid C++ evidence or nothing.
    result = detect_language(code, candidates=["C++", "rust"])
    assert result is None or result[0] == "cpp"
    assert detect_language("fn main() { let mut x = 1; }", candidates=["python"]) is None
    assert detect_language("fn main() {}", candidates=[]) is None
    with pytest.raises(RegistryError):
        detect_language("x = 1", candidates=["cobol"])


def test_shebangs() -> None:
    assert detect_language("#!/usr/bin/env python3\nx = 1\n") == ("python", 0.99)
    assert detect_language("#!/usr/bin/env node\nx()\n")[0] == "javascript"
    assert detect_language("#!/bin/sh\nls\n")[0] == "shell"
    assert detect_language("#!/usr/bin/perl -w\n1;\n")[0] == "perl"
    # A shebang language outside the candidates is ignored.
    assert detect_language("#!/bin/sh\nls\n", candidates=["python"]) is None


def test_only_registry_languages_are_returned() -> None:
    small = Registry([load_registry().get("python")])  # Python's packaged entry, features included
    assert detect_language('fn main() {\n    println!("x");\n}\n', registry=small) is None
    assert detect_language("def f(x):\n    return x\n", registry=small)[0] == "python"


def test_accuracy_on_paper_languages() -> None:
    cases = [(lang, code) for lang in PAPER_LANGUAGES for code in SNIPPETS[lang]]
    right = sum(1 for lang, code in cases if (detect_language(code) or ("", 0))[0] == lang)
    assert right / len(cases) >= 0.95


def test_a_new_language_is_one_registry_entry(tmp_path) -> None:
    """Detection knows nothing per language: an entry with features and interpreters is enough."""
    path = tmp_path / "languages.toml"
    path.write_text(
        '[[language]]\nid = "python"\nname = "Python"\n'
        '[[language]]\nid = "mole"\nname = "Mole"\ninterpreters = ["molerun"]\n'
        "detect = [\n  ['^\\s*burrow\\s+\\w+\\s*\\{', 3],\n  ['\\bdig!\\(', 2],\n  ['\\bdef\\s', -1],\n]\n",
        encoding="utf-8",
    )
    reg = load_registry(path)
    assert reg.get("mole").detect == ((r"^\s*burrow\s+\w+\s*\{", 3), (r"\bdig!\(", 2), (r"\bdef\s", -1))
    code = "burrow tunnel {\n    dig!(3)\n    dig!(4)\n}\n"
    result = detect_language(code, registry=reg)
    assert result is not None and result[0] == "mole"
    assert detect_language(code) is None  # the packaged registry has no such language
    assert detect_language("#!/usr/bin/env molerun2\nx\n", registry=reg) == ("mole", 0.99)
    assert detect_language(code, candidates=["python"], registry=reg) is None


def test_packaged_features_compile_and_cover_the_paper_languages() -> None:
    reg = load_registry()
    assert all(reg.get(lang).detect for lang in PAPER_LANGUAGES)
    assert reg.by_interpreter("python") == "python" and reg.by_interpreter("node") == "javascript"
    assert reg.by_interpreter("cobol") is None
