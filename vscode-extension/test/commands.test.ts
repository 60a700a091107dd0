import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  ArgumentError,
  allPackItems,
  baseName,
  effectiveRange,
  executeCommandParams,
  explainArgs,
  explanationDocument,
  formatBytes,
  installCandidates,
  normalizePackList,
  packArgs,
  packForLanguageId,
  removeCandidates,
  summarizeInstall,
  summarizeRemove,
  translateArgs,
  translateTargets,
  translationLanguageId,
} from '../src/commands';
import type { ListPacksResult, LspRange, PackInfo } from '../src/protocol';

const range = (sl: number, sc: number, el: number, ec: number): LspRange => ({
  start: { line: sl, character: sc },
  end: { line: el, character: ec },
});

const pack = (language: string, name: string, over: Partial<PackInfo> = {}): PackInfo => ({
  language,
  name,
  vscodeLanguageIds: [language],
  installed: false,
  available: true,
  sizeBytes: null,
  revision: null,
  ...over,
});

const list = (packs: PackInfo[], offline = false): ListPacksResult => ({ packs, offline, repo: 'org/packs', revision: 'main' });

const PACKS = list([
  pack('rust', 'Rust', { installed: true, sizeBytes: 5_242_880, revision: '0123456789abcdef0123' }),
  pack('python', 'Python', { installed: true, sizeBytes: 4_000_000 }),
  pack('go', 'Go', { sizeBytes: 3_500_000 }),
  pack('cpp', 'C++', { sizeBytes: 900, vscodeLanguageIds: ['cpp', 'cuda-cpp'] }),
  pack('cobol', 'COBOL', { available: false }),
]);

describe('executeCommandParams', () => {
  it('puts the single argument object in a list', () => {
    const args = explainArgs('file:///a.py', range(0, 0, 2, 0));
    assert.deepEqual(executeCommandParams('mole.explain', args), { command: 'mole.explain', arguments: [args] });
    assert.deepEqual(executeCommandParams('mole.listPacks', {}), { command: 'mole.listPacks', arguments: [{}] });
  });
  it('refuses names the server does not know', () => {
    assert.throws(() => executeCommandParams('mole.explainSelection' as 'mole.explain', explainArgs('file:///a', range(0, 0, 0, 1))), ArgumentError);
  });
});

describe('effectiveRange', () => {
  const lengths = [10, 0, 4];
  const len = (l: number): number => lengths[l] ?? 0;
  it('keeps a selection and normalises a backwards one', () => {
    assert.deepEqual(effectiveRange(range(0, 2, 2, 3), len), range(0, 2, 2, 3));
    assert.deepEqual(effectiveRange(range(2, 3, 0, 2), len), range(0, 2, 2, 3));
    assert.deepEqual(effectiveRange(range(0, 5, 0, 1), len), range(0, 1, 0, 5));
  });
  it('takes the cursor line when nothing is selected', () => {
    assert.deepEqual(effectiveRange(range(2, 1, 2, 1), len), range(2, 0, 2, 4));
    assert.equal(effectiveRange(range(1, 0, 1, 0), len), undefined);
  });
});

describe('explain and translate arguments', () => {
  it('builds {uri, range} and {uri, range, target}', () => {
    assert.deepEqual(explainArgs('file:///src/main.rs', range(3, 0, 9, 1)), { uri: 'file:///src/main.rs', range: range(3, 0, 9, 1) });
    assert.deepEqual(translateArgs('untitled:Untitled-1', range(0, 0, 1, 0), ' c++ '), {
      uri: 'untitled:Untitled-1',
      range: range(0, 0, 1, 0),
      target: 'c++',
    });
  });
  it('refuses empty selections, documents and targets', () => {
    assert.throws(() => explainArgs('file:///a', range(1, 1, 1, 1)), ArgumentError);
    assert.throws(() => explainArgs('', range(0, 0, 1, 0)), ArgumentError);
    assert.throws(() => translateArgs('file:///a', range(0, 0, 1, 0), '  '), ArgumentError);
    assert.throws(() => translateArgs('file:///a', range(0, 0, 0, 0), 'go'), ArgumentError);
  });
});

describe('packArgs', () => {
  it('de-duplicates and keeps the order', () => {
    assert.deepEqual(packArgs(['go', ' rust', 'go', '']), { languages: ['go', 'rust'] });
  });
  it('needs at least one language', () => {
    assert.throws(() => packArgs([]), ArgumentError);
    assert.throws(() => packArgs([' ']), ArgumentError);
  });
});

describe('pack lists', () => {
  it('install offers available packs that are not installed', () => {
    assert.deepEqual(
      installCandidates(PACKS).map((p) => p.language),
      ['cpp', 'go'],
    );
    assert.equal(installCandidates(PACKS)[1]?.description, 'go · available · 3.3 MB');
  });
  it('remove offers installed packs', () => {
    assert.deepEqual(
      removeCandidates(PACKS).map((p) => p.language),
      ['python', 'rust'],
    );
  });
  it('the menu lists installed packs first with icons and revisions', () => {
    const items = allPackItems(PACKS);
    assert.deepEqual(
      items.map((i) => i.label),
      ['$(check) Python', '$(check) Rust', '$(cloud-download) C++', '$(circle-slash) COBOL', '$(cloud-download) Go'],
    );
    assert.equal(items[1]?.detail, 'revision 0123456789ab');
    assert.equal(items[3]?.description, 'cobol · not in the pack repository');
  });
  it('translation targets: installed first, downloadable next, never the source language', () => {
    assert.deepEqual(
      translateTargets(PACKS).map((p) => p.language),
      ['python', 'rust', 'cpp', 'go'],
    );
    assert.deepEqual(
      translateTargets(PACKS, 'python').map((p) => p.language),
      ['rust', 'cpp', 'go'],
    );
    assert.deepEqual(
      translateTargets(PACKS, 'go').map((p) => p.language),
      ['python', 'rust', 'cpp'],
    );
    assert.equal(translateTargets(PACKS)[3]?.description, 'go · downloads first (3.3 MB)');
  });
  it('the source language comes from the editor languageId through vscodeLanguageIds', () => {
    // cuda-cpp is C++ for the registry: the C++ pack is left out of the quick-pick.
    const source = packForLanguageId(PACKS.packs, 'cuda-cpp')?.language;
    assert.equal(source, 'cpp');
    assert.deepEqual(
      translateTargets(PACKS, source).map((p) => p.language),
      ['python', 'rust', 'go'],
    );
  });
  it('offline translation only offers installed packs', () => {
    assert.deepEqual(
      translateTargets({ ...PACKS, offline: true }).map((p) => p.language),
      ['python', 'rust'],
    );
    assert.deepEqual(
      translateTargets({ ...PACKS, offline: true }, 'rust').map((p) => p.language),
      ['python'],
    );
  });
});

describe('packForLanguageId', () => {
  const packs = [
    pack('typescript', 'TypeScript', { vscodeLanguageIds: ['typescript', 'typescriptreact'] }),
    pack('javascript', 'JavaScript', { vscodeLanguageIds: ['javascript', 'javascriptreact'] }),
    pack('shell', 'Shell', { vscodeLanguageIds: ['shellscript'] }),
    pack('go', 'Go', { vscodeLanguageIds: [] }),
  ];
  it('maps a VS Code languageId to its pack before any request', () => {
    assert.equal(packForLanguageId(packs, 'typescriptreact')?.language, 'typescript');
    assert.equal(packForLanguageId(packs, 'javascriptreact')?.language, 'javascript');
    assert.equal(packForLanguageId(packs, 'shellscript')?.language, 'shell');
    assert.equal(packForLanguageId(packs, 'TypeScriptReact')?.language, 'typescript');
  });
  it('falls back to the registry id (servers without vscodeLanguageIds), else nothing', () => {
    assert.equal(packForLanguageId(packs, 'go')?.language, 'go');
    assert.equal(packForLanguageId(packs, 'shell')?.language, 'shell');
    assert.equal(packForLanguageId(packs, 'markdown'), undefined);
    assert.equal(packForLanguageId(packs, undefined), undefined);
  });
});

describe('normalizePackList', () => {
  it('fills vscodeLanguageIds for older servers and drops malformed entries', () => {
    const raw = {
      packs: [
        { language: 'rust', name: 'Rust', installed: true, available: true, sizeBytes: 1, revision: 'abc' },
        { language: 'go', name: '', vscodeLanguageIds: ['go', 7], installed: false, available: true, sizeBytes: null, revision: null },
        { name: 'nameless' },
        null,
      ],
      offline: false,
      repo: 'org/packs',
      revision: 'main',
    } as unknown as ListPacksResult;
    const list = normalizePackList(raw);
    assert.deepEqual(
      list.packs.map((p) => [p.language, p.name, p.vscodeLanguageIds]),
      [
        ['rust', 'Rust', []],
        ['go', 'go', ['go']],
      ],
    );
    assert.equal(packForLanguageId(list.packs, 'rust')?.language, 'rust');
    assert.deepEqual(normalizePackList({ offline: true } as unknown as ListPacksResult).packs, []);
  });
});

describe('formatBytes', () => {
  it('uses binary units', () => {
    assert.equal(formatBytes(null), '');
    assert.equal(formatBytes(-1), '');
    assert.equal(formatBytes(900), '900 B');
    assert.equal(formatBytes(1536), '1.5 KB');
    assert.equal(formatBytes(5_242_880), '5.0 MB');
    assert.equal(formatBytes(50 * 1024 * 1024), '50 MB');
    assert.equal(formatBytes(3 * 1024 ** 3), '3.0 GB');
  });
});

describe('summaries', () => {
  it('install', () => {
    assert.deepEqual(summarizeInstall({ installed: ['go', 'rust'], errors: {} }), { severity: 'info', message: 'MoLE: installed go, rust.' });
    assert.deepEqual(summarizeInstall({ installed: ['go'], errors: { cobol: 'not in the index' } }), {
      severity: 'warning',
      message: 'MoLE: installed go; failed: cobol: not in the index',
    });
    assert.equal(summarizeInstall({ installed: [], errors: { go: 'offline' } }).severity, 'error');
    assert.equal(summarizeInstall({ installed: [], errors: {} }).message, 'MoLE: nothing was installed.');
  });
  it('remove', () => {
    assert.deepEqual(summarizeRemove({ removed: ['go'], errors: {} }), { severity: 'info', message: 'MoLE: removed go.' });
    assert.equal(summarizeRemove({ removed: [], errors: { go: 'not installed' } }).severity, 'error');
  });
});

describe('explanationDocument', () => {
  it('titles the answer with the file and lines', () => {
    const doc = explanationDocument({ markdown: 'It adds.\n\n```rust\nfn f() {}\n```\n', language: 'rust' }, 'lib.rs', range(9, 0, 12, 0));
    assert.equal(doc, '# Explanation: `lib.rs`, lines 10–12 (rust)\n\nIt adds.\n\n```rust\nfn f() {}\n```\n');
    assert.match(explanationDocument({ markdown: 'x', language: 'go' }, 'a.go', range(4, 2, 4, 9)), /line 5 \(go\)/);
    assert.match(explanationDocument({ markdown: '  ', language: '' }, 'a', range(0, 0, 0, 1)), /empty explanation/);
  });
  it('ends with a note when the answer stopped because the model repeated itself', () => {
    const cut = explanationDocument({ markdown: 'It loops.', language: 'go', stopReason: 'repetition' }, 'a.go', range(0, 0, 1, 0));
    assert.match(cut, /It loops\.\n\n> _.*repeating itself.*_\n$/);
    assert.doesNotMatch(explanationDocument({ markdown: 'x', language: 'go', stopReason: 'eos' }, 'a.go', range(0, 0, 1, 0)), /repeating/);
  });
});

describe('translationLanguageId', () => {
  const known = ['rust', 'cpp', 'plaintext', 'shellscript'];
  it('prefers the VS Code languageId, then the registry id, then plain text', () => {
    assert.equal(translationLanguageId({ code: '', language: 'rust', vscodeLanguageId: 'rust' }, known), 'rust');
    assert.equal(translationLanguageId({ code: '', language: 'shell', vscodeLanguageId: 'shellscript' }, known), 'shellscript');
    assert.equal(translationLanguageId({ code: '', language: 'cpp', vscodeLanguageId: '' }, known), 'cpp');
    assert.equal(translationLanguageId({ code: '', language: 'zig', vscodeLanguageId: 'zig' }, known), 'plaintext');
  });
});

describe('baseName', () => {
  it('takes the last path segment of a URI or path', () => {
    assert.equal(baseName('file:///home/me/src/main%20file.rs'), 'main file.rs');
    assert.equal(baseName('/a/b/c.py'), 'c.py');
    assert.equal(baseName('C:\\x\\y.ts'), 'y.ts');
    assert.equal(baseName('untitled:Untitled-1'), 'untitled:Untitled-1');
  });
});
