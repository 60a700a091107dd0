import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { STATES, type PackInfo, type Status } from '../src/protocol';
import {
  CrashTracker,
  ProgressTracker,
  coerceStatus,
  expertForEditor,
  expertLabel,
  packLabel,
  renderStatus,
  type ViewInput,
} from '../src/statusView';

const status = (over: Partial<Status> = {}): Status => ({
  state: 'ready',
  activeExpert: null,
  activeLanguage: null,
  activeUri: null,
  vscodeLanguageId: null,
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

const pack = (language: string, vscodeLanguageIds: string[], over: Partial<PackInfo> = {}): PackInfo => ({
  language,
  name: language,
  vscodeLanguageIds,
  installed: false,
  available: true,
  sizeBytes: null,
  revision: null,
  ...over,
});

const PACKS: PackInfo[] = [
  pack('rust', ['rust'], { installed: true }),
  pack('typescript', ['typescript', 'typescriptreact']),
  pack('javascript', ['javascript', 'javascriptreact'], { installed: true }),
  pack('cobol', [], { available: false }),
];

const RS = 'file:///proj/src/main.rs';
const TSX = 'file:///proj/src/App.tsx';
const PY = 'file:///proj/add.py';

/** The status after a finished generation for `uri`. */
const answered = (uri: string | null, vscodeLanguageId: string, activeLanguage: string, activeExpert: string | null, over: Partial<Status> = {}): Status =>
  status({ activeUri: uri, vscodeLanguageId, activeLanguage, activeExpert, ...over });

/** The active editor showing `uri` in `languageId`. */
const editor = (uri: string, languageId: string): Partial<ViewInput> => ({ editorUri: uri, editorLanguageId: languageId });

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

  it('shows the expert when the status is about the active document', () => {
    const rust = renderStatus(input({ server: answered(RS, 'rust', 'rust', 'rust'), ...editor(RS, 'rust'), packs: PACKS }));
    assert.equal(rust.text, '$(hubot) MoLE: rust');
    assert.equal(rust.severity, 'normal');
    assert.match(rust.tooltip, /This rust document was last answered by the rust expert/);
    // typescriptreact → the typescript language, answered by its fallback expert.
    const tsx = renderStatus(input({ server: answered(TSX, 'typescriptreact', 'typescript', 'javascript'), ...editor(TSX, 'typescriptreact') }));
    assert.equal(tsx.text, '$(hubot) MoLE: typescript→javascript');
    assert.match(tsx.tooltip, /javascript expert/);
    // activeExpert null: the shared adapter alone; a generation running for another request keeps it.
    const gen = renderStatus(input({ server: answered(PY, 'python', 'python', null, { state: 'generating' }), ...editor(PY, 'python') }));
    assert.equal(gen.text, '$(sync~spin) MoLE: python→shared');
    assert.match(gen.tooltip, /last answered by the shared adapter/);
  });

  it("never shows another document's expert: the pack state of the editor's language instead", () => {
    const lastWasRust = answered(RS, 'rust', 'rust', 'rust');
    // Another document in another language: its pack, mapped through vscodeLanguageIds.
    const tsx = renderStatus(input({ server: lastWasRust, ...editor(TSX, 'typescriptreact'), packs: PACKS }));
    assert.equal(tsx.text, '$(hubot) MoLE: typescript (not installed)');
    assert.match(tsx.tooltip, /typescript expert pack is not installed: it is downloaded the first time/);
    // Another document in the same language: still the pack state, not the other document's answer.
    const otherRs = renderStatus(input({ server: lastWasRust, ...editor('file:///proj/src/lib.rs', 'rust'), packs: PACKS }));
    assert.equal(otherRs.text, '$(hubot) MoLE: rust (installed)');
    assert.match(otherRs.tooltip, /rust expert pack is installed; no completion from this document yet/);
    // Same URI but the editor's language was changed since: the status is stale.
    const relabelled = renderStatus(input({ server: lastWasRust, ...editor(RS, 'javascriptreact'), packs: PACKS }));
    assert.equal(relabelled.text, '$(hubot) MoLE: javascript (installed)');
    // A language whose pack the repository does not have.
    const noPack = renderStatus(input({ server: lastWasRust, ...editor('file:///x.cbl', 'COBOL'), packs: [pack('cobol', ['cobol'], { available: false })] }));
    assert.equal(noPack.text, '$(hubot) MoLE: cobol (no pack)');
    assert.match(noPack.tooltip, /no cobol expert/);
    // Offline: an available pack cannot be downloaded.
    const offline = renderStatus(input({ server: status({ offline: true }), ...editor(TSX, 'typescriptreact'), packs: PACKS }));
    assert.equal(offline.text, '$(hubot) MoLE: typescript (not installed) (offline)');
    assert.match(offline.tooltip, /cannot be downloaded offline/);
    // No pack maps the languageId, or the packs are not listed yet.
    const markdown = renderStatus(input({ server: lastWasRust, ...editor('file:///README.md', 'markdown'), packs: PACKS }));
    assert.equal(markdown.text, '$(hubot) MoLE');
    assert.match(markdown.tooltip, /No expert pack is listed for markdown documents/);
    const unlisted = renderStatus(input({ server: lastWasRust, ...editor(TSX, 'typescriptreact') }));
    assert.equal(unlisted.text, '$(hubot) MoLE');
    assert.match(unlisted.tooltip, /No request yet from this typescriptreact document/);
    // No editor at all.
    assert.equal(renderStatus(input({ server: lastWasRust, packs: PACKS })).text, '$(hubot) MoLE');
  });

  it('after a translation (activeUri null) the source editor shows its own pack, not the target expert', () => {
    const translated = answered(null, 'rust', 'rust', 'rust');
    const v = renderStatus(input({ server: translated, ...editor(PY, 'python'), packs: [...PACKS, pack('python', ['python'], { installed: true })] }));
    assert.equal(v.text, '$(hubot) MoLE: python (installed)');
    assert.doesNotMatch(v.tooltip, /rust/);
  });

  it('offline and base-only', () => {
    const offline = renderStatus(input({ server: answered(RS, 'rust', 'rust', 'rust', { offline: true }), ...editor(RS, 'rust') }));
    assert.equal(offline.text, '$(hubot) MoLE: rust (offline)');
    assert.match(offline.tooltip, /Offline/);
    const base = renderStatus(input({ server: status({ baseOnly: true }), ...editor(RS, 'rust'), packs: PACKS }));
    assert.equal(base.text, '$(hubot) MoLE: base only');
    assert.equal(base.severity, 'warning');
    assert.match(base.tooltip, /no core pack/);
    const GO = 'file:///proj/main.go';
    const baseExpert = renderStatus(input({ server: answered(GO, 'go', 'go', null, { baseOnly: true, offline: true }), ...editor(GO, 'go') }));
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
    const full = status({
      state: 'generating',
      activeExpert: 'rust',
      activeLanguage: 'rust',
      activeUri: RS,
      vscodeLanguageId: 'rust',
      offline: true,
      message: 'hi',
    });
    assert.deepEqual(coerceStatus(full), full);
    assert.deepEqual(coerceStatus({ state: 'ready' }), status());
    // An older server sends no activeUri/vscodeLanguageId: its status is about no editor.
    const old = coerceStatus({ state: 'ready', activeExpert: 'rust', activeLanguage: 'rust', baseOnly: false, offline: false, message: null });
    assert.equal(old?.activeUri, null);
    assert.equal(expertForEditor(old, RS, 'rust'), undefined);
    assert.equal(coerceStatus({ state: 'ready', activeUri: 42, vscodeLanguageId: '' })?.activeUri, null);
  });
  it('rejects garbage', () => {
    assert.equal(coerceStatus(null), undefined);
    assert.equal(coerceStatus('ready'), undefined);
    assert.equal(coerceStatus({ state: 'sleeping' }), undefined);
    assert.equal(coerceStatus({}), undefined);
  });
});

describe('expertForEditor', () => {
  it('matches the URI and, when both are known, the languageId', () => {
    const st = answered(TSX, 'typescriptreact', 'typescript', 'javascript');
    assert.deepEqual(expertForEditor(st, TSX, 'typescriptreact'), { language: 'typescript', expert: 'javascript', baseOnly: false });
    assert.equal(expertForEditor(st, TSX, 'typescript'), undefined);
    assert.equal(expertForEditor(st, RS, 'typescriptreact'), undefined);
    assert.equal(expertForEditor(st, undefined, 'typescriptreact'), undefined);
    assert.equal(expertForEditor(undefined, TSX, 'typescriptreact'), undefined);
    assert.equal(expertForEditor(answered(null, 'rust', 'rust', 'rust'), RS, 'rust'), undefined);
    // A document whose language the server did not recognise: named by its languageId.
    assert.deepEqual(expertForEditor(status({ activeUri: 'file:///notes.txt', vscodeLanguageId: 'plaintext' }), 'file:///notes.txt', 'plaintext'), {
      language: 'plaintext',
      expert: null,
      baseOnly: false,
    });
  });
});

describe('packLabel', () => {
  it('says installed, not installed or no pack', () => {
    assert.equal(packLabel(pack('rust', ['rust'], { installed: true })), 'rust (installed)');
    assert.equal(packLabel(pack('go', ['go'])), 'go (not installed)');
    assert.equal(packLabel(pack('cobol', [], { available: false })), 'cobol (no pack)');
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
