/**
 * The bundled extension, run in plain Node against a fake 'vscode' module and a fake server process:
 * startup errors, initializationOptions, mole/status and $/progress in the status bar, the inline
 * completion middleware, the commands' requests, didChangeConfiguration, shutdown.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import Module from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { buildSync, stop as stopEsbuild } from 'esbuild';

import { Position, Selection, Uri, createFakeVscode, makeDocument, type FakeState } from './fixtures/fakeVscode';

const extRoot = join(__dirname, '..', '..');
const bundle = join(extRoot, 'out', 'glue', 'extension.js');
const serverJs = join(__dirname, 'fixtures', 'fakeServer.js');

interface ExtensionModule {
  activate(context: { subscriptions: { dispose(): unknown }[] }): void;
  deactivate(): Promise<void>;
}

let currentVscode: Record<string, unknown> | undefined;
type Loader = (request: string, parent: unknown, isMain: boolean) => unknown;
const moduleInternals = Module as unknown as { _load: Loader };
const originalLoad = moduleInternals._load;

function load(fake: Record<string, unknown>): ExtensionModule {
  currentVscode = fake;
  delete require.cache[bundle];
  return require(bundle) as ExtensionModule;
}

async function waitFor<T>(what: string, check: () => T | undefined | false, timeoutMs = 10000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Logged {
  id?: number | string;
  method?: string;
  params?: Record<string, unknown>;
}

const readLog = (file: string): Logged[] =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Logged)
    : [];

describe('extension glue (fake vscode, fake server)', { skip: process.platform === 'win32' && 'needs a POSIX shell', timeout: 60000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'mole-glue-'));

  before(() => {
    buildSync({
      entryPoints: [join(extRoot, 'src', 'extension.ts')],
      outfile: bundle,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      external: ['vscode'],
      logLevel: 'error',
    });
    moduleInternals._load = function (this: unknown, request: string, parent: unknown, isMain: boolean): unknown {
      if (request === 'vscode' && currentVscode) return currentVscode;
      return originalLoad.call(this, request, parent, isMain);
    };
  });

  const active: ExtensionModule[] = [];
  after(async () => {
    // Stop whatever a failed test left running, so the runner can exit.
    for (const ext of active) await ext.deactivate().catch(() => undefined);
    await stopEsbuild();
    moduleInternals._load = originalLoad;
    rmSync(dir, { recursive: true, force: true });
  });

  /** A shell script standing in for python: answers the probe, then runs the fake server. */
  function fakePython(name: string, opts: { found?: boolean; mode?: 'crash' | 'crash-on-remove' } = {}): { python: string; log: string; argsFile: string } {
    const python = join(dir, name);
    const log = join(dir, `${name}.log`);
    const argsFile = join(dir, `${name}.args`);
    const probe = JSON.stringify({
      python: [3, 12, 0],
      executable: python,
      origin: opts.found === false ? null : '/fake/mole_lsp/__init__.py',
      found: opts.found !== false,
      version: '0.1.0',
    });
    writeFileSync(
      python,
      [
        '#!/bin/sh',
        `if [ "$1" = "-c" ]; then echo '${probe}'; exit 0; fi`,
        `echo "$@" > '${argsFile}'`,
        `pwd > '${argsFile}.cwd'`,
        `${opts.mode ? `FAKE_MODE=${opts.mode} ` : ''}exec '${process.execPath}' '${serverJs}' '${log}'`,
        '',
      ].join('\n'),
    );
    chmodSync(python, 0o755);
    return { python, log, argsFile };
  }

  function setup(
    config: Record<string, unknown>,
    workspace: Record<string, unknown> = {},
    trusted = true,
  ): { ext: ExtensionModule; state: FakeState } {
    const { module, state } = createFakeVscode();
    for (const [k, v] of Object.entries(config)) state.config.set(k, v);
    for (const [k, v] of Object.entries(workspace)) state.workspaceConfig.set(k, v);
    state.trusted = trusted;
    const ext = load(module);
    active.push(ext);
    return { ext, state };
  }

  it('says the interpreter is missing, with buttons, and shows "not running"', async () => {
    const { ext, state } = setup({ 'mole.pythonPath': join(dir, 'does-not-exist', 'python') });
    ext.activate({ subscriptions: [] });
    const shown = await waitFor('an error message', () => state.messages.find((m) => m.kind === 'error'));
    assert.match(shown.message, /was not found/);
    assert.match(shown.message, /mole\.pythonPath/);
    assert.deepEqual(shown.items, ['Open Settings', 'Show Logs']);
    assert.equal(state.statusItem.text, '$(error) MoLE: not running');
    const expected = [
      'mole.explainSelection',
      'mole.translateSelection',
      'mole.installPacks',
      'mole.removePacks',
      'mole.showPacks',
      'mole.restartServer',
      'mole.showLogs',
      'mole.toggleInlineCompletions',
    ];
    for (const id of expected) assert.ok(state.commands.has(id), `${id} registered`);
    // A command while the server is down explains why instead of failing silently.
    await state.commands.get('mole.installPacks')?.();
    assert.ok(state.messages.some((m) => m.kind === 'error' && /not running/.test(m.message) && m.items.includes('Restart Server')));
    await ext.deactivate();
  });

  it('offers "pip install mole-lsp" when the package is missing and runs it in a terminal', async () => {
    const { python } = fakePython('python-bare', { found: false });
    const { ext, state } = setup({ 'mole.pythonPath': python });
    state.answer = (m) => (m.items.includes('Install mole-lsp (pip)') ? 'Install mole-lsp (pip)' : undefined);
    ext.activate({ subscriptions: [] });
    const shown = await waitFor('an error message', () => state.messages.find((m) => m.kind === 'error'));
    assert.match(shown.message, /pip install mole-lsp/);
    assert.equal(shown.items[0], 'Install mole-lsp (pip)');
    const terminal = await waitFor('a terminal', () => state.terminals[0]);
    assert.deepEqual(terminal.sent, [`${python} -m pip install mole-lsp`]);
    await ext.deactivate();
  });

  it('reports a server that dies at startup, with Show Logs, and does not loop', async () => {
    const { python } = fakePython('python-crash', { mode: 'crash' });
    const { ext, state } = setup({ 'mole.pythonPath': python });
    ext.activate({ subscriptions: [] });
    const shown = await waitFor('an error message', () => state.messages.find((m) => m.kind === 'error'));
    assert.deepEqual(shown.items, ['Show Logs', 'Retry']);
    assert.match(shown.message, /stopped while starting: ImportError: libtorch_cpu\.so/);
    await waitFor('status "not running"', () => state.statusItem.text === '$(error) MoLE: not running');
    await waitFor('the server stderr in the log', () => state.logLines.some((l) => l.includes('libtorch_cpu.so')));
    await new Promise((r) => setTimeout(r, 300));
    const errors = state.messages.filter((m) => m.kind === 'error');
    assert.equal(errors.length, 1, JSON.stringify(errors));
    await ext.deactivate();
  });

  it('restarts a crashed server three times, then stops and says so', async () => {
    const { python, log } = fakePython('python-flaky', { mode: 'crash-on-remove' });
    const { ext, state } = setup({ 'mole.pythonPath': python });
    state.pick = (list) => list.filter((i) => i.language === 'python');
    ext.activate({ subscriptions: [] });
    for (let crash = 1; crash <= 4; crash++) {
      await waitFor(`server ${crash} ready`, () => state.statusItem.text === '$(hubot) MoLE');
      await state.commands.get('mole.removePacks')?.();
      if (crash <= 3) {
        await waitFor(`restart ${crash}`, () => readLog(log).filter((m) => m.method === 'initialize').length === crash + 1);
      }
    }
    const final = await waitFor('the crash message', () => state.messages.find((m) => /crashed 4 times/.test(m.message)));
    assert.deepEqual(final.items, ['Retry', 'Show Logs']);
    await waitFor('status "not running"', () => state.statusItem.text === '$(error) MoLE: not running');
    assert.equal(readLog(log).filter((m) => m.method === 'initialize').length, 4);
    assert.ok(state.logLines.some((l) => l.includes('Segmentation fault')));
    const errors = state.messages.filter((m) => m.kind === 'error').map((m) => m.message);
    assert.equal(errors.length, 4, errors.join('\n'));
    for (const e of errors.slice(0, 3)) assert.match(e, /stopped while answering \(Segmentation fault\); it is restarting/);
    await ext.deactivate();
  });

  it('in an untrusted workspace takes the interpreter, arguments and model from user settings only', async () => {
    const user = fakePython('python-user');
    const planted = fakePython('python-planted');
    const { ext, state } = setup(
      { 'mole.pythonPath': user.python, 'mole.cacheDir': '/home/me/cache' },
      {
        'mole.pythonPath': planted.python,
        'mole.serverArgs': ['--log-file', '/tmp/x'],
        'mole.baseModel': '/workspace/evil-model',
        'mole.packRepo': 'attacker/packs',
        'mole.cacheDir': '/workspace/cache',
        'mole.maxNewTokens': 48,
      },
      false,
    );
    ext.activate({ subscriptions: [] });
    const init = await waitFor('initialize', () => readLog(user.log).find((m) => m.method === 'initialize'));
    assert.equal(existsSync(planted.argsFile), false, 'the workspace-chosen interpreter was never run');
    assert.equal(readFileSync(user.argsFile, 'utf8').trim(), '-m mole_lsp serve');
    // `python -m` imports from its working directory: not the workspace in restricted mode.
    assert.equal(readFileSync(`${user.argsFile}.cwd`, 'utf8').trim(), homedir());
    const options = init.params?.initializationOptions as Record<string, unknown>;
    assert.deepEqual(
      [options.baseModel, options.packRepo, options.cacheDir, options.maxNewTokens],
      ['', '', '/home/me/cache', 48],
    );

    // Trust granted: the server restarts with the workspace's values.
    state.grantTrust();
    const trustedInit = await waitFor('initialize by the workspace interpreter', () =>
      readLog(planted.log).find((m) => m.method === 'initialize'),
    );
    assert.equal(readFileSync(planted.argsFile, 'utf8').trim(), '-m mole_lsp serve --log-file /tmp/x');
    assert.equal((trustedInit.params?.initializationOptions as Record<string, unknown>).baseModel, '/workspace/evil-model');
    await ext.deactivate();
  });

  it('asks for ghost text again once the server is ready (keystrokes typed while it loaded)', async () => {
    const { python } = fakePython('python-retrigger');
    const { ext, state } = setup({ 'mole.pythonPath': python });
    const doc = makeDocument(Uri.file('/proj/early.py'), 'python', 'def f(');
    state.textDocuments.push(doc);
    state.activeTextEditor = { document: doc, selection: new Selection(new Position(0, 6), new Position(0, 6)) };
    const triggers = (): number => state.executed.filter((e) => e.id === 'editor.action.inlineSuggest.trigger').length;
    ext.activate({ subscriptions: [] });
    await waitFor('status ready', () => state.statusTexts.some((t) => t.startsWith('$(hubot) MoLE')));
    await waitFor('the inline suggestion re-triggered', () => triggers() === 1);
    // Not before the model was ready: the trigger came after the "loading" status.
    assert.ok(state.statusTexts.some((t) => t.includes('loading')), state.statusTexts.join(' | '));
    // Every finished generation also reports "ready": those do not trigger again.
    const provider = await waitFor('an inline provider', () => state.inlineProviders[0]);
    const token = { isCancellationRequested: false, onCancellationRequested: () => ({ dispose: () => undefined }) };
    await provider.provideInlineCompletionItems(doc, new Position(0, 6), { triggerKind: 1, selectedCompletionInfo: undefined }, token);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(triggers(), 1);
    await ext.deactivate();
  });

  it('runs the server and speaks the protocol', async () => {
    const { python, log, argsFile } = fakePython('python-ok');
    const listPacksRequests = (): number =>
      readLog(log).filter((m) => m.method === 'workspace/executeCommand' && m.params?.command === 'mole.listPacks').length;
    const { ext, state } = setup({
      'mole.pythonPath': python,
      'mole.serverArgs': ['--log-level', 'debug'],
      'mole.maxNewTokens': 32,
      'mole.enable': { '*': true, markdown: false },
      'mole.device': 'cpu',
    });
    const doc = makeDocument(Uri.file('/proj/add.py'), 'python', 'def add(a, b):\n    return a + b\n');
    state.textDocuments.push(doc);
    state.activeTextEditor = { document: doc, selection: new Selection(new Position(0, 0), new Position(1, 16)) };
    ext.activate({ subscriptions: [] });

    // initializationOptions: the mapped server settings, nothing client-only.
    const init = await waitFor('initialize', () => readLog(log).find((m) => m.method === 'initialize'));
    assert.deepEqual(init.params?.initializationOptions, {
      baseModel: '',
      packRepo: '',
      packRevision: 'main',
      cacheDir: '',
      device: 'cpu',
      backend: 'auto',
      endpoint: '',
      apiKey: '',
      remoteModels: {},
      maxNewTokens: 32,
      explainMaxNewTokens: 256,
      contextTokens: 1024,
      debounceMs: 150,
      kvCacheMB: 256,
      multiLineTimeMs: 1000,
      llamacppMerge: true,
      reuseSuggestions: true,
      enable: { '*': true, markdown: false },
      offline: false,
      autoInstallPacks: true,
      idleUnloadMinutes: 30,
    });
    assert.equal(readFileSync(argsFile, 'utf8').trim(), '-m mole_lsp serve --log-level debug');

    // $/progress and mole/status reach the status bar. Before any request from add.py, the bar shows
    // its language's pack, which mole.listPacks (asked once the model is ready) maps from 'python'.
    await waitFor('status "python (installed)"', () => state.statusItem.text === '$(hubot) MoLE: python (installed)');
    assert.ok(state.statusTexts.includes('$(loading~spin) MoLE: loading 50%'), state.statusTexts.join(' | '));
    assert.equal(state.messages.filter((m) => m.kind === 'error').length, 0, JSON.stringify(state.messages));
    assert.equal(listPacksRequests(), 1);

    // Another editor, in a language whose pack is mapped through vscodeLanguageIds only.
    const tsx = makeDocument(Uri.file('/proj/App.tsx'), 'typescriptreact', 'export const App = () => null;\n');
    const showEditor = (document: typeof doc): void => {
      state.activeTextEditor = { document, selection: new Selection(new Position(0, 0), new Position(0, 0)) };
      state.activeEditorEmitter.fire(state.activeTextEditor);
    };
    showEditor(tsx);
    assert.equal(state.statusItem.text, '$(hubot) MoLE: typescript (not installed)');
    showEditor(doc);
    assert.equal(state.statusItem.text, '$(hubot) MoLE: python (installed)');
    state.activeTextEditor = { document: doc, selection: new Selection(new Position(0, 0), new Position(1, 16)) };

    // Inline completions: asked for python, dropped for markdown (disabled in mole.enable).
    const provider = await waitFor('an inline provider', () => state.inlineProviders[0]);
    const token = { isCancellationRequested: false, onCancellationRequested: () => ({ dispose: () => undefined }) };
    const context = { triggerKind: 1, selectedCompletionInfo: undefined };
    const md = makeDocument(Uri.file('/proj/README.md'), 'markdown', '# hi\n');
    assert.equal(await provider.provideInlineCompletionItems(md, new Position(0, 4), context, token), null);
    const got = (await provider.provideInlineCompletionItems(doc, new Position(1, 16), context, token)) as
      | { items: { insertText: unknown }[] }
      | { insertText: unknown }[];
    const items = Array.isArray(got) ? got : got.items;
    assert.equal(items[0]?.insertText, 'return a + b');
    // The status now names add.py (activeUri): its expert is shown for this editor, and only for it.
    await waitFor('status "python"', () => state.statusItem.text === '$(hubot) MoLE: python');
    assert.ok(state.statusTexts.includes('$(sync~spin) MoLE: python (installed)'), state.statusTexts.join(' | '));
    showEditor(makeDocument(Uri.file('/proj/other.py'), 'python', 'x = 1\n'));
    assert.equal(state.statusItem.text, '$(hubot) MoLE: python (installed)');
    showEditor(doc);
    assert.equal(state.statusItem.text, '$(hubot) MoLE: python');
    state.activeTextEditor = { document: doc, selection: new Selection(new Position(0, 0), new Position(1, 16)) };
    const inlineRequests = readLog(log).filter((m) => m.method === 'textDocument/inlineCompletion');
    assert.equal(inlineRequests.length, 1);
    assert.equal((inlineRequests[0]?.params?.textDocument as { uri: string }).uri, 'file:///proj/add.py');
    // textDocument/completion is never asked (ghost text covers it).
    const completion = state.completionProviders[0];
    if (completion) assert.equal(await completion.provideCompletionItems(doc, new Position(1, 16), token, {}), null);
    assert.equal(readLog(log).filter((m) => m.method === 'textDocument/completion').length, 0);

    // Explain Selection → mole.explain with {uri, range} → markdown preview to the side.
    await state.commands.get('mole.explainSelection')?.();
    const explain = readLog(log).find((m) => m.method === 'workspace/executeCommand' && m.params?.command === 'mole.explain');
    assert.deepEqual(explain?.params?.arguments, [
      { uri: 'file:///proj/add.py', range: { start: { line: 0, character: 0 }, end: { line: 1, character: 16 } } },
    ]);
    assert.equal(state.opened[0]?.language, 'markdown');
    assert.match(state.opened[0]?.content ?? '', /^# Explanation: `add\.py`, lines 1–2 \(python\)\n\nIt adds `a` and `b`\./);
    assert.ok(state.executed.some((e) => e.id === 'markdown.showPreviewToSide'));

    // Translate Selection To… → quick pick from mole.listPacks (without python, the selection's
    // language) → mole.translate → editor beside.
    let targets: string[] = [];
    state.pick = (list) => {
      targets = list.map((i) => i.language ?? '');
      return list.find((i) => i.language === 'rust');
    };
    await state.commands.get('mole.translateSelection')?.();
    assert.deepEqual(targets, ['rust', 'go', 'typescript']);
    const translate = readLog(log).find((m) => m.method === 'workspace/executeCommand' && m.params?.command === 'mole.translate');
    assert.deepEqual((translate?.params?.arguments as { target: string }[])[0]?.target, 'rust');
    assert.equal(state.opened[1]?.language, 'rust');
    assert.match(state.opened[1]?.content ?? '', /fn add/);
    assert.equal(state.shownDocuments.at(-1)?.document.languageId, 'rust');
    // The status after a translation names the rust expert but no document: add.py shows its pack.
    await waitFor('status "python (installed)" after translating', () => state.statusItem.text === '$(hubot) MoLE: python (installed)');
    assert.ok(!state.statusTexts.includes('$(hubot) MoLE: python→rust'), state.statusTexts.join(' | '));

    // Install Pack… offers what is not installed and reports the result.
    let offered: string[] = [];
    state.pick = (list, options) => {
      offered = list.map((i) => i.language ?? '');
      assert.equal(options.canPickMany, true);
      return list.filter((i) => i.language === 'go');
    };
    await state.commands.get('mole.installPacks')?.();
    assert.deepEqual(offered, ['go', 'typescript']);
    const install = readLog(log).find((m) => m.method === 'workspace/executeCommand' && m.params?.command === 'mole.installPack');
    assert.deepEqual(install?.params?.arguments, [{ languages: ['go'] }]);
    assert.ok(state.messages.some((m) => m.kind === 'info' && m.message === 'MoLE: installed go.'));

    // A changed server setting goes out as {settings: {mole: {...}}}; client-only ones do not.
    state.config.set('mole.debounceMs', 300);
    state.configEmitter.fire({ affectsConfiguration: (s) => s === 'mole' || s === 'mole.debounceMs' });
    const change = await waitFor('didChangeConfiguration', () =>
      readLog(log).find((m) => m.method === 'workspace/didChangeConfiguration'),
    );
    const sent = (change.params?.settings as { mole: Record<string, unknown> }).mole;
    assert.equal(sent.debounceMs, 300);
    assert.equal('pythonPath' in sent, false);

    // Toggle Inline Completions: the setting flips, the status bar says so, ghost text stops.
    await state.commands.get('mole.toggleInlineCompletions')?.();
    assert.equal(state.config.get('mole.inlineCompletions.enable'), false);
    await waitFor('status "inline off"', () => state.statusItem.text === '$(circle-slash) MoLE: inline off');
    assert.equal(await provider.provideInlineCompletionItems(doc, new Position(1, 16), context, token), null);
    assert.equal(readLog(log).filter((m) => m.method === 'textDocument/inlineCompletion').length, 1);

    // Restart Server: the old process is shut down and a new one initialised.
    await state.commands.get('mole.restartServer')?.();
    await waitFor('a second initialize', () => readLog(log).filter((m) => m.method === 'initialize').length === 2);
    assert.ok(readLog(log).some((m) => m.method === 'exit'), 'the first server got exit');
    await waitFor('status after restart', () => state.statusItem.text === '$(circle-slash) MoLE: inline off');

    // Deactivation shuts the server down cleanly.
    await ext.deactivate();
    await waitFor('shutdown and exit', () => readLog(log).filter((m) => m.method === 'exit').length === 2);
  });
});
