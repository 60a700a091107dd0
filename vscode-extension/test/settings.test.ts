import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { SERVER_SETTING_DEFAULTS } from '../src/protocol';
import {
  CLIENT_SETTING_NAMES,
  SERVER_SETTING_NAMES,
  classifyConfigChange,
  didChangeConfigurationParams,
  isLanguageEnabled,
  readClientSettings,
  readServerSettings,
  validateServerSetting,
  withLanguageEnabled,
} from '../src/settings';

const getterOf =
  (values: Record<string, unknown>) =>
  (name: string): unknown =>
    values[name];

describe('readServerSettings', () => {
  it('gives the protocol defaults when nothing is set', () => {
    const { settings, problems } = readServerSettings(getterOf({}));
    assert.deepEqual(problems, []);
    assert.deepEqual(settings, SERVER_SETTING_DEFAULTS);
  });

  it('passes valid values through under their protocol names', () => {
    const { settings, problems } = readServerSettings(
      getterOf({
        baseModel: 'deepseek-ai/deepseek-coder-1.3b-base',
        packRepo: 'me/packs',
        packRevision: 'v1',
        cacheDir: '/tmp/cache',
        device: 'cuda',
        backend: 'openai',
        endpoint: ' http://gpu-box:8000 ',
        apiKey: 'k',
        remoteModels: { python: 'team-python' },
        maxNewTokens: 1024,
        explainMaxNewTokens: 1,
        contextTokens: 64,
        debounceMs: 0,
        kvCacheMB: 0,
        multiLineTimeMs: 60000,
        llamacppMerge: false,
        reuseSuggestions: false,
        enable: { '*': false, python: true },
        offline: true,
        autoInstallPacks: false,
        idleUnloadMinutes: 0,
      }),
    );
    assert.deepEqual(problems, []);
    assert.deepEqual(settings, {
      baseModel: 'deepseek-ai/deepseek-coder-1.3b-base',
      packRepo: 'me/packs',
      packRevision: 'v1',
      cacheDir: '/tmp/cache',
      device: 'cuda',
      backend: 'openai',
      endpoint: 'http://gpu-box:8000',
      apiKey: 'k',
      remoteModels: { python: 'team-python' },
      maxNewTokens: 1024,
      explainMaxNewTokens: 1,
      contextTokens: 64,
      debounceMs: 0,
      kvCacheMB: 0,
      multiLineTimeMs: 60000,
      llamacppMerge: false,
      reuseSuggestions: false,
      enable: { '*': false, python: true },
      offline: true,
      autoInstallPacks: false,
      idleUnloadMinutes: 0,
    });
  });

  it('leaves out invalid values (the server keeps the previous one) and names each problem', () => {
    const { settings, problems } = readServerSettings(
      getterOf({ maxNewTokens: 0, contextTokens: 2.5, device: 'tpu', offline: 'yes', enable: { python: 'no' }, debounceMs: 9000 }),
    );
    for (const name of ['maxNewTokens', 'contextTokens', 'device', 'offline', 'enable', 'debounceMs'] as const) {
      assert.equal(name in settings, false, `${name} should be left out`);
      assert.ok(
        problems.some((p) => p.includes(`mole.${name}`)),
        `a problem should name mole.${name}: ${problems.join(' | ')}`,
      );
    }
    assert.equal(problems.length, 6);
    assert.equal(settings.explainMaxNewTokens, 256);
    assert.equal(settings.packRevision, 'main');
  });

  it('never sends client-only settings', () => {
    const { settings } = readServerSettings(
      getterOf({ pythonPath: '/usr/bin/python3', serverArgs: ['--x'], 'inlineCompletions.enable': false, 'trace.server': 'verbose' }),
    );
    for (const name of CLIENT_SETTING_NAMES) assert.equal(name in settings, false);
    assert.deepEqual(Object.keys(settings).sort(), [...SERVER_SETTING_NAMES].sort());
  });

  it('trims strings', () => {
    assert.equal(readServerSettings(getterOf({ device: ' cpu ', packRevision: ' dev\n' })).settings.device, 'cpu');
    assert.equal(readServerSettings(getterOf({ packRevision: ' dev\n' })).settings.packRevision, 'dev');
  });
});

describe('validateServerSetting', () => {
  it('checks integer bounds inclusively', () => {
    assert.deepEqual(validateServerSetting('maxNewTokens', 1), { ok: true, value: 1 });
    assert.deepEqual(validateServerSetting('maxNewTokens', 1024), { ok: true, value: 1024 });
    assert.equal(validateServerSetting('maxNewTokens', 1025).ok, false);
    assert.equal(validateServerSetting('contextTokens', 63).ok, false);
    assert.equal(validateServerSetting('contextTokens', 16384).ok, true);
    assert.equal(validateServerSetting('explainMaxNewTokens', 4097).ok, false);
    assert.equal(validateServerSetting('debounceMs', -1).ok, false);
    assert.equal(validateServerSetting('debounceMs', '150').ok, false);
    assert.equal(validateServerSetting('debounceMs', Number.NaN).ok, false);
  });

  it('accepts auto, cpu, cuda, cuda:N and mps only', () => {
    for (const d of ['auto', 'cpu', 'cuda', 'cuda:0', 'cuda:1', 'cuda:12', 'mps', ' cuda:2 ']) {
      assert.deepEqual(validateServerSetting('device', d), { ok: true, value: d.trim() }, d);
    }
    for (const d of ['gpu', 'tpu', 'cuda:', 'cuda:-1', 'cuda:x', 'cuda:0:1', 'CUDA', 'cuda 0', 'mps:0', 'cpu,cuda', '']) {
      const v = validateServerSetting('device', d);
      assert.equal(v.ok, false, d);
      if (!v.ok) assert.match(v.problem, /^mole\.device must be auto, cpu, cuda, cuda:N .* or mps; got /);
    }
    assert.equal(validateServerSetting('device', 1).ok, false);
  });

  it('checks the remote model names (openai backend)', () => {
    assert.deepEqual(validateServerSetting('remoteModels', { python: 'p', nl: 'n' }), { ok: true, value: { python: 'p', nl: 'n' } });
    for (const bad of [{ python: 1 }, ['p'], null, 'python=p']) {
      const v = validateServerSetting('remoteModels', bad);
      assert.equal(v.ok, false, JSON.stringify(bad));
      if (!v.ok) assert.match(v.problem, /^mole\.remoteModels must map languages to model names/);
    }
    assert.equal(validateServerSetting('backend', 'openai').ok, true);
  });

  it('checks the enable map and copies it', () => {
    const map = { '*': true, rust: false };
    const r = validateServerSetting('enable', map);
    assert.ok(r.ok);
    assert.deepEqual(r.value, map);
    assert.notEqual(r.value, map);
    assert.equal(validateServerSetting('enable', null).ok, false);
    assert.equal(validateServerSetting('enable', [true]).ok, false);
    assert.equal(validateServerSetting('enable', true).ok, false);
  });
});

describe('didChangeConfigurationParams', () => {
  it('wraps the settings as {settings: {mole: ...}}', () => {
    assert.deepEqual(didChangeConfigurationParams({ offline: true }), { settings: { mole: { offline: true } } });
  });
});

describe('readClientSettings', () => {
  it('has defaults', () => {
    assert.deepEqual(readClientSettings(getterOf({})), {
      settings: { pythonPath: '', serverArgs: [], inlineCompletionsEnabled: true },
      problems: [],
    });
  });

  it('reads and checks the values', () => {
    const ok = readClientSettings(getterOf({ pythonPath: ' /opt/py/bin/python ', serverArgs: ['--log', 'debug'], 'inlineCompletions.enable': false }));
    assert.deepEqual(ok.settings, { pythonPath: '/opt/py/bin/python', serverArgs: ['--log', 'debug'], inlineCompletionsEnabled: false });
    const bad = readClientSettings(getterOf({ pythonPath: 3, serverArgs: '--log debug', 'inlineCompletions.enable': 'off' }));
    assert.deepEqual(bad.settings, { pythonPath: '', serverArgs: [], inlineCompletionsEnabled: true });
    assert.equal(bad.problems.length, 3);
  });
});

describe('enable map', () => {
  it('uses the language entry, then "*", then on', () => {
    assert.equal(isLanguageEnabled(undefined, 'python'), true);
    assert.equal(isLanguageEnabled({}, 'python'), true);
    assert.equal(isLanguageEnabled({ '*': false }, 'python'), false);
    assert.equal(isLanguageEnabled({ '*': false, python: true }, 'python'), true);
    assert.equal(isLanguageEnabled({ '*': true, python: false }, 'python'), false);
    assert.equal(isLanguageEnabled({ '*': true, python: false }, 'rust'), true);
    // languageIds are case-sensitive in VS Code.
    assert.equal(isLanguageEnabled({ '*': true, python: false }, 'Python'), true);
  });

  it('switches one language and keeps the map small', () => {
    assert.deepEqual(withLanguageEnabled({ '*': true }, 'markdown', false), { '*': true, markdown: false });
    assert.deepEqual(withLanguageEnabled({ '*': true, markdown: false }, 'markdown', true), { '*': true });
    assert.deepEqual(withLanguageEnabled({ '*': false }, 'rust', true), { '*': false, rust: true });
    assert.deepEqual(withLanguageEnabled(undefined, 'go', false), { '*': true, go: false });
    assert.deepEqual(withLanguageEnabled({ '*': true, go: false }, '*', false), { '*': false, go: false });
    const original = { '*': true };
    withLanguageEnabled(original, 'c', false);
    assert.deepEqual(original, { '*': true });
  });
});

describe('classifyConfigChange', () => {
  const affectsOnly =
    (...changed: string[]) =>
    (section: string): boolean =>
      changed.some((c) => c === section || c.startsWith(`${section}.`));

  it('ignores other sections', () => {
    assert.deepEqual(classifyConfigChange(affectsOnly('editor.fontSize')), { server: false, restart: false, view: false });
  });

  it('sends server settings, restarts for the interpreter, re-renders for toggles', () => {
    assert.deepEqual(classifyConfigChange(affectsOnly('mole.maxNewTokens')), { server: true, restart: false, view: true });
    assert.deepEqual(classifyConfigChange(affectsOnly('mole.pythonPath')), { server: false, restart: true, view: false });
    assert.deepEqual(classifyConfigChange(affectsOnly('mole.serverArgs')), { server: false, restart: true, view: false });
    assert.deepEqual(classifyConfigChange(affectsOnly('mole.inlineCompletions.enable')), { server: false, restart: false, view: true });
    assert.deepEqual(classifyConfigChange(affectsOnly('mole.enable')), { server: true, restart: false, view: true });
    assert.deepEqual(classifyConfigChange(affectsOnly('mole.trace.server')), { server: false, restart: false, view: false });
  });
});
