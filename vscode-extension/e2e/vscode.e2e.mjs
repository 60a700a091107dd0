// The extension in a real VS Code (code-server) driven by a headless Chromium: install the .vsix, open a
// Python file from the Explorer, type, see ghost text from mole-lsp (a tiny model), accept it with Tab,
// hover the status bar item, run Explain Selection, stop code-server and check no process is left.
// The workspace is not trusted (restricted mode), its .vscode/settings.json names a planted interpreter
// and it holds a planted mole_lsp package (`python -m` imports from its working directory): neither
// may run.
// Run by .ci/vscode-e2e.sh, which installs the tools and builds the .vsix and the tiny world.
//
// Environment: E2E_TOOLS (a folder whose node_modules has playwright-core and code-server), E2E_VSIX,
// E2E_WORLD (JSON printed by tests/e2e_world.py), E2E_WORK (an empty folder), E2E_ARTIFACTS
// (screenshots and logs), E2E_CHROMIUM (default /usr/bin/chromium).
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const tools = env('E2E_TOOLS');
const vsix = env('E2E_VSIX');
const world = JSON.parse(readFileSync(env('E2E_WORLD'), 'utf8'));
const work = env('E2E_WORK');
const artifacts = env('E2E_ARTIFACTS');
const chromiumPath = env('E2E_CHROMIUM', '/usr/bin/chromium');
const { chromium } = createRequire(join(tools, 'package.json'))('playwright-core');
const codeServer = join(tools, 'node_modules', '.bin', 'code-server');

mkdirSync(artifacts, { recursive: true });
const log = (...parts) => console.log(`[e2e ${new Date().toISOString().slice(11, 19)}]`, ...parts);

// -- the workspace, a fresh profile and the settings that point the extension at the tiny world -------
const workspace = join(work, 'workspace');
const userData = join(work, 'user-data');
const extensions = join(work, 'extensions');
for (const d of [workspace, join(userData, 'User'), extensions]) mkdirSync(d, { recursive: true });
const FILE = 'fib.py';
writeFileSync(join(workspace, FILE), 'import os\n\n');
// A workspace that tries to pick the interpreter: the planted one leaves a mark, then runs the real one.
const planted = join(workspace, 'planted-python');
const mark = join(work, 'planted-python-ran');
writeFileSync(planted, `#!/bin/sh\necho "$@" >> '${mark}'\nexec '${world.settings['mole.pythonPath']}' "$@"\n`, { mode: 0o755 });
mkdirSync(join(workspace, 'mole_lsp'));
writeFileSync(join(workspace, 'mole_lsp', '__init__.py'), `open(${JSON.stringify(mark)}, "a").write("the workspace's mole_lsp package was imported\\n")\n`);
mkdirSync(join(workspace, '.vscode'));
writeFileSync(
  join(workspace, '.vscode', 'settings.json'),
  JSON.stringify({ 'mole.pythonPath': '${workspaceFolder}/planted-python', 'mole.serverArgs': ['--verbose'] }),
);
writeFileSync(
  join(userData, 'User', 'settings.json'),
  JSON.stringify(
    {
      ...world.settings,
      // Untrusted folders open in restricted mode without asking.
      'security.workspace.trust.enabled': true,
      'security.workspace.trust.startupPrompt': 'never',
      'security.workspace.trust.untrustedFiles': 'open',
      'workbench.startupEditor': 'none',
      'workbench.tips.enabled': false,
      'workbench.enableExperiments': false,
      'extensions.autoCheckUpdates': false,
      'extensions.autoUpdate': false,
      'update.mode': 'none',
      'telemetry.telemetryLevel': 'off',
      'editor.inlineSuggest.enabled': true,
      'editor.quickSuggestions': { other: false, comments: false, strings: false },
      'editor.suggestOnTriggerCharacters': false,
      'files.autoSave': 'off',
      // What is typed lands as typed, whether or not the Python language support has loaded yet.
      'editor.autoClosingBrackets': 'never',
      'editor.autoClosingQuotes': 'never',
      'editor.autoSurround': 'never',
      'editor.autoIndent': 'none',
      'editor.formatOnType': false,
    },
    null,
    2,
  ),
);

// Its own config file too: code-server writes a default one on first use (not into ~/.config here).
const csArgs = ['--config', join(work, 'code-server.yaml'), '--user-data-dir', userData, '--extensions-dir', extensions];
log('installing', vsix);
execFileSync(codeServer, [...csArgs, '--install-extension', vsix], { stdio: 'inherit', timeout: 120_000 });

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Every process below `root` (from /proc), so that leftovers can be found after the stop. */
function descendants(root) {
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
    } catch {
      // gone meanwhile
    }
  }
  const out = [];
  const stack = [root];
  while (stack.length) for (const c of children.get(stack.pop()) ?? []) out.push(c), stack.push(c);
  return out;
}

function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return undefined;
  }
}

/** Live processes that belong to this run: below code-server, or a mole-lsp server of the tiny world. */
function ours(pids) {
  const cache = world.env.MOLE_CACHE_DIR;
  const found = new Map();
  for (const pid of pids) {
    const cmd = cmdline(pid);
    if (cmd) found.set(pid, cmd);
  }
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = cmdline(Number(name));
    if (!cmd || !cmd.includes('mole_lsp serve')) continue;
    try {
      if (readFileSync(`/proc/${name}/environ`, 'utf8').includes(cache)) found.set(Number(name), cmd);
    } catch {
      // gone or not readable
    }
  }
  return found;
}

const port = await freePort();
const serverLog = join(artifacts, 'code-server.log');
log(`starting code-server on 127.0.0.1:${port}`);
const cs = spawn(
  codeServer,
  [...csArgs, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check',
    '--disable-getting-started-override', workspace],
  {
    env: { ...process.env, ...world.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  },
);
const csOut = [];
cs.stdout.on('data', (d) => csOut.push(d));
cs.stderr.on('data', (d) => csOut.push(d));
let csExited = false;
cs.on('exit', () => (csExited = true));
// Stopped from outside (timeout, Ctrl+C): take code-server down with us.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    if (!csExited) cs.kill('SIGTERM');
    process.exit(1);
  });
}

let browser;
let page;
let step = 'start';
const t0 = Date.now();
async function shot(name) {
  if (page) await page.screenshot({ path: join(artifacts, `${name}.png`) }).catch(() => undefined);
}

try {
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (csExited || i > 120) throw new Error(`code-server did not come up:\n${Buffer.concat(csOut).toString()}`);
    await sleep(500);
  }
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(60_000);
  step = 'open the workbench';
  await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`);
  await page.locator('.monaco-workbench').waitFor();

  step = 'restricted mode';
  await page.locator('.statusbar-item', { hasText: 'Restricted Mode' }).first().waitFor();

  step = `open ${FILE} from the Explorer`;
  const row = page.locator(`.explorer-folders-view .monaco-list-row[aria-label="${FILE}"]`);
  await row.waitFor();
  await row.dblclick();
  const editor = page.locator('.editor-instance .monaco-editor').first();
  await editor.waitFor();
  await page.locator(`.tab[aria-label*="${FILE}"]`).first().waitFor();

  step = 'type and see ghost text';
  await editor.locator('.view-lines').click();
  await page.keyboard.press('Control+End');
  const typed = 'def fib(n):\n    ';
  await page.keyboard.type(typed, { delay: 30 });
  // Typed while the server may still be loading: the extension asks again once it is ready.
  log(`typed; status bar: ${JSON.stringify(await page.locator('.statusbar-item', { hasText: 'MoLE' }).first().innerText().catch(() => '?'))}`);
  const ghost = page.locator('.ghost-text-decoration, .ghost-text').first();
  await ghost.waitFor({ state: 'visible', timeout: 120_000 });
  const ghostText = (await page.locator('.ghost-text-decoration, .ghost-text').allTextContents()).join('');
  log(`ghost text after ${Math.round((Date.now() - t0) / 1000)} s: ${JSON.stringify(ghostText)}`);
  await shot('ghost-text');

  step = 'accept with Tab and check the text';
  await page.keyboard.press('Tab');
  await page.keyboard.press('Control+S');
  const file = join(workspace, FILE);
  const before = `import os\n\n${typed}`;
  let saved = '';
  for (let i = 0; i < 50 && !saved.startsWith(before); i++, await sleep(100)) saved = readFileSync(file, 'utf8');
  const added = saved.slice(before.length);
  log(`saved ${JSON.stringify(saved)}`);
  if (!saved.startsWith(before)) throw new Error(`the file does not start with what was typed: ${JSON.stringify(saved)}`);
  if (!/\S/.test(added)) throw new Error(`Tab did not accept the suggestion (added ${JSON.stringify(added)})`);
  // Ghost text and the accepted text agree (compared on their first visible word: a control character
  // in a random model's output renders differently).
  const word = /[A-Za-z0-9_]{2,}/.exec(ghostText)?.[0];
  if (word && !added.includes(word)) throw new Error(`accepted ${JSON.stringify(added)}, ghost text was ${JSON.stringify(ghostText)}`);
  await page.locator('.ghost-text-decoration, .ghost-text').first().waitFor({ state: 'detached', timeout: 5_000 }).catch(() => undefined);

  step = 'hover the status bar item';
  const item = page.locator('.statusbar-item', { hasText: 'MoLE' }).first();
  await item.waitFor();
  log(`status bar: ${JSON.stringify(await item.innerText())}`);
  await item.hover();
  const hover = page.locator('.workbench-hover, .monaco-hover').filter({ hasText: /MoLE|mole-lsp|expert|pack/i }).first();
  await hover.waitFor({ state: 'visible', timeout: 15_000 });
  log(`tooltip: ${JSON.stringify((await hover.innerText()).slice(0, 200))}`);
  await shot('status-hover');
  await page.mouse.move(10, 10);

  step = 'Explain Selection';
  await editor.locator('.view-lines').click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('F1');
  const palette = page.locator('.quick-input-widget input');
  await palette.waitFor();
  await palette.fill('>MoLE: Explain Selection');
  await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Explain Selection' }).first().waitFor();
  await page.keyboard.press('Enter');
  // The explanation opens as markdown, shown as a preview beside the editor: its text is in a webview.
  const result = page.locator('.tab', { hasText: /Preview/ }).first();
  await result.waitFor({ timeout: 120_000 });
  log(`explain result tab: ${JSON.stringify(await result.innerText())}`);
  let explained = false;
  for (let i = 0; i < 100 && !explained; i++, await sleep(200)) {
    for (const frame of page.frames()) {
      if (frame === page.mainFrame()) continue;
      const text = await frame.locator('body').innerText({ timeout: 1_000 }).catch(() => '');
      if (/Explanation/.test(text) && text.includes(FILE)) explained = true;
    }
  }
  await shot('explain');
  if (!explained) throw new Error('the explanation did not show');
  log('explanation shown');

  step = 'restricted mode kept the planted code out';
  if (existsSync(mark)) throw new Error(`planted code in the workspace ran: ${readFileSync(mark, 'utf8')}`);
} catch (err) {
  if (existsSync(mark)) console.error(`planted code in the workspace ran: ${readFileSync(mark, 'utf8')}`);
  await shot(`failure-${step.replace(/[^a-z0-9]+/gi, '-')}`);
  writeFileSync(serverLog, Buffer.concat(csOut));
  console.error(`FAILED at "${step}": ${err instanceof Error ? err.stack : String(err)}`);
  process.exitCode = 1;
} finally {
  step = 'stop';
  const below = csExited ? [] : descendants(cs.pid);
  log(`stopping code-server (${below.length} processes below it)`);
  // Without the language server among them the leftover check below would prove nothing.
  if (!process.exitCode && !below.some((pid) => cmdline(pid)?.includes('mole_lsp serve'))) {
    console.error('FAILED: no mole_lsp server process was found below code-server');
    process.exitCode = 1;
  }
  await browser?.close().catch(() => undefined);
  if (!csExited) {
    cs.kill('SIGTERM');
    for (let i = 0; i < 100 && !csExited; i++) await sleep(100);
  }
  // Children get a moment to notice (the extension host, then the language server on stdin EOF).
  let left = ours(below);
  for (let i = 0; i < 100 && left.size > 0; i++, await sleep(100)) left = ours(below);
  writeFileSync(serverLog, Buffer.concat(csOut));
  if (left.size > 0) {
    console.error(`FAILED: processes left after code-server stopped:\n${[...left].map(([p, c]) => `  ${p} ${c}`).join('\n')}`);
    for (const pid of left.keys()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    process.exitCode = 1;
  } else {
    log('no process left');
  }
  if (process.exitCode) console.error(`screenshots and logs: ${artifacts}`);
  else log(`passed in ${Math.round((Date.now() - t0) / 1000)} s`);
  if (!existsSync(serverLog)) writeFileSync(serverLog, '');
}
