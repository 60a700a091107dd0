import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { STATES, type Status } from '../src/protocol';
import {
  CrashTracker,
  ExpertMemory,
  ProgressTracker,
  coerceStatus,
  expertLabel,
  renderStatus,
  type ViewInput,
} from '../src/statusView';

const status = (over: Partial<Status> = {}): Status => ({
  state: 'ready',
  activeExpert: null,
  activeLanguage: null,
  baseOnly: false,
  offline: false,
  message: null,
  ...over,
});

const input = (over: Partial<ViewInput> = {}): ViewInput => ({
  client: 'running',
  server: status(),
  inlineEnabled: true,
  languageEnabled: true,
  ...over,
});

describe('expertLabel', () => {
  it('names the expert, a fallback, no expert and base-only', () => {
    assert.equal(expertLabel({ language: 'rust', expert: 'rust', baseOnly: false }), 'rust');
    assert.equal(expertLabel({ language: 'typescript', expert: 'javascript', baseOnly: false }), 'typescript→javascript');
    assert.equal(expertLabel({ language: 'python', expert: null, baseOnly: false }), 'python→shared');
    assert.equal(expertLabel({ language: 'go', expert: 'go', baseOnly: true }), 'go→base');
  });
});

describe('renderStatus', () => {
  it('client states', () => {
    const failed = renderStatus(input({ client: 'failed', clientDetail: 'Python "python3" was not found.', server: undefined }));
    assert.equal(failed.text, '$(error) MoLE: not running');
    assert.equal(failed.severity, 'error');
    assert.match(failed.tooltip, /python3/);

    const stopped = renderStatus(input({ client: 'stopped', server: undefined }));
    assert.equal(stopped.text, '$(debug-stop) MoLE: stopped');
    assert.equal(stopped.severity, 'warning');

    assert.equal(renderStatus(input({ client: 'starting', server: undefined })).text, '$(loading~spin) MoLE: starting');
    // Running, but no status yet.
    assert.equal(renderStatus(input({ server: undefined })).text, '$(loading~spin) MoLE: starting');
  });

  it('every server state', () => {
    const texts = Object.fromEntries(
      STATES.map((state) => [state, renderStatus(input({ server: status({ state, message: state === 'error' ? 'CUDA out of memory' : null }) })).text]),
    );
    assert.deepEqual(texts, {
      starting: '$(loading~spin) MoLE: starting',
      loading: '$(loading~spin) MoLE: loading',
      ready: '$(hubot) MoLE',
      downloading: '$(cloud-download) MoLE: downloading',
      generating: '$(sync~spin) MoLE',
      error: '$(error) MoLE: error',
    });
    const error = renderStatus(input({ server: status({ state: 'error', message: 'CUDA out of memory' }) }));
    assert.equal(error.severity, 'error');
    assert.match(error.tooltip, /CUDA out of memory/);
  });

  it('shows download and load progress from $/progress and the status message', () => {
    const dl = renderStatus(
      input({
        server: status({ state: 'downloading', message: 'downloading rust pack' }),
        progress: { title: 'Installing packs', message: 'rust', percentage: 42.4 },
      }),
    );
    assert.equal(dl.text, '$(cloud-download) MoLE: rust 42%');
    const dlNoProgress = renderStatus(input({ server: status({ state: 'downloading', message: 'downloading rust pack' }) }));
    assert.equal(dlNoProgress.text, '$(cloud-download) MoLE: downloading rust pack');
    const loading = renderStatus(input({ server: status({ state: 'loading' }), progress: { title: 'Loading model', percentage: 100.7 } }));
    assert.equal(loading.text, '$(loading~spin) MoLE: loading 100%');
    const other = renderStatus(input({ progress: { title: 'Removing packs' } }));
    assert.equal(other.text, '$(sync~spin) MoLE: Removing packs');
    const long = renderStatus(input({ server: status({ state: 'downloading', message: 'x'.repeat(80) }) }));
    assert.ok(long.text.length < 60, long.text);
  });

  it('the active expert for the current editor', () => {
    const rust = renderStatus(input({ editorLanguageId: 'rust', expert: { language: 'rust', expert: 'rust', baseOnly: false } }));
    assert.equal(rust.text, '$(hubot) MoLE: rust');
    assert.equal(rust.severity, 'normal');
    const ts = renderStatus(input({ editorLanguageId: 'typescript', expert: { language: 'typescript', expert: 'javascript', baseOnly: false } }));
    assert.equal(ts.text, '$(hubot) MoLE: typescript→javascript');
    assert.match(ts.tooltip, /javascript expert/);
    const gen = renderStatus(
      input({ server: status({ state: 'generating' }), editorLanguageId: 'python', expert: { language: 'python', expert: null, baseOnly: false } }),
    );
    assert.equal(gen.text, '$(sync~spin) MoLE: python→shared');
    const unknown = renderStatus(input({ editorLanguageId: 'go' }));
    assert.equal(unknown.text, '$(hubot) MoLE');
    assert.match(unknown.tooltip, /No request yet from a go document/);
  });

  it('offline and base-only', () => {
    const offline = renderStatus(input({ server: status({ offline: true }), editorLanguageId: 'rust', expert: { language: 'rust', expert: 'rust', baseOnly: false } }));
    assert.equal(offline.text, '$(hubot) MoLE: rust (offline)');
    assert.match(offline.tooltip, /Offline/);
    const base = renderStatus(input({ server: status({ baseOnly: true }) }));
    assert.equal(base.text, '$(hubot) MoLE: base only');
    assert.equal(base.severity, 'warning');
    assert.match(base.tooltip, /no core pack/);
    const baseExpert = renderStatus(input({ server: status({ baseOnly: true, offline: true }), expert: { language: 'go', expert: null, baseOnly: true } }));
    assert.equal(baseExpert.text, '$(hubot) MoLE: go→base (offline)');
    assert.equal(baseExpert.severity, 'warning');
  });

  it('inline completions switched off, globally or for the language', () => {
    const off = renderStatus(input({ inlineEnabled: false, editorLanguageId: 'rust' }));
    assert.equal(off.text, '$(circle-slash) MoLE: inline off');
    assert.match(off.tooltip, /Toggle Inline Completions/);
    const lang = renderStatus(input({ languageEnabled: false, editorLanguageId: 'markdown' }));
    assert.equal(lang.text, '$(circle-slash) MoLE: off for markdown');
    // Progress and errors are still shown while switched off.
    assert.equal(renderStatus(input({ inlineEnabled: false, server: status({ state: 'error' }) })).text, '$(error) MoLE: error');
    assert.equal(renderStatus(input({ inlineEnabled: false, server: status({ state: 'loading' }) })).text, '$(loading~spin) MoLE: loading');
  });

  it('escapes markdown in server messages', () => {
    const v = renderStatus(input({ server: status({ message: '[click](command:evil) *x*' }) }));
    assert.doesNotMatch(v.tooltip, /\[click\]\(command:evil\)/);
    assert.match(v.tooltip, /Click for packs and actions/);
  });
});

describe('coerceStatus', () => {
  it('accepts a full status and fills missing optional fields', () => {
    const full = status({ state: 'generating', activeExpert: 'rust', activeLanguage: 'rust', offline: true, message: 'hi' });
    assert.deepEqual(coerceStatus(full), full);
    assert.deepEqual(coerceStatus({ state: 'ready' }), status());
  });
  it('rejects garbage', () => {
    assert.equal(coerceStatus(null), undefined);
    assert.equal(coerceStatus('ready'), undefined);
    assert.equal(coerceStatus({ state: 'sleeping' }), undefined);
    assert.equal(coerceStatus({}), undefined);
  });
});

describe('ExpertMemory', () => {
  it('remembers per VS Code languageId what answered last', () => {
    const m = new ExpertMemory();
    m.record('typescriptreact', status({ activeLanguage: 'typescript', activeExpert: 'javascript' }));
    m.record('rust', status({ state: 'generating', activeLanguage: 'rust', activeExpert: 'rust' }));
    m.record('go', status({ activeLanguage: null }));
    m.record(undefined, status({ activeLanguage: 'c', activeExpert: 'cpp' }));
    m.record('python', status({ state: 'downloading', activeLanguage: 'python', activeExpert: 'python' }));
    assert.deepEqual(m.lookup('typescriptreact'), { language: 'typescript', expert: 'javascript', baseOnly: false });
    assert.deepEqual(m.lookup('rust'), { language: 'rust', expert: 'rust', baseOnly: false });
    assert.equal(m.lookup('go'), undefined);
    assert.equal(m.lookup('python'), undefined);
    assert.equal(m.lookup(undefined), undefined);
    m.clear();
    assert.equal(m.lookup('rust'), undefined);
  });
});

describe('ProgressTracker', () => {
  it('follows begin/report/end and shows the newest running token', () => {
    const p = new ProgressTracker();
    assert.equal(p.current(), undefined);
    p.apply('load', { kind: 'begin', title: 'Loading model', percentage: 0 });
    p.apply(7, { kind: 'begin', title: 'Downloading rust' });
    p.apply(7, { kind: 'report', message: '3/10 MB', percentage: 30 });
    assert.deepEqual(p.current(), { title: 'Downloading rust', message: '3/10 MB', percentage: 30 });
    p.apply('load', { kind: 'report', percentage: 50 });
    p.apply(7, { kind: 'end' });
    assert.deepEqual(p.current(), { title: 'Loading model', message: undefined, percentage: 50 });
    p.apply('unknown', { kind: 'report', percentage: 99 });
    p.apply('load', { kind: 'end' });
    assert.equal(p.current(), undefined);
  });
});

describe('CrashTracker', () => {
  it('allows three restarts within three minutes, then stops', () => {
    const c = new CrashTracker(3, 180_000);
    assert.equal(c.crashed(0), true);
    assert.equal(c.crashed(1000), true);
    assert.equal(c.crashed(2000), true);
    assert.equal(c.crashed(3000), false);
    assert.equal(c.recentCrashes, 4);
    c.reset();
    assert.equal(c.crashed(4000), true);
  });
  it('forgets old crashes', () => {
    const c = new CrashTracker(1, 1000);
    assert.equal(c.crashed(0), true);
    assert.equal(c.crashed(500), false);
    assert.equal(c.crashed(5000), true);
  });
});
