/**
 * Arguments for the server's commands and the text the extension builds from their answers.
 * No 'vscode' import: positions and ranges are plain LSP objects here.
 */
import {
  COMMANDS,
  type CMD_LIST_PACKS,
  type CMD_STATUS,
  type CommandSignatures,
  type ExplainParams,
  type ExplainResult,
  type InstallPackResult,
  type ListPacksResult,
  type LspRange,
  type PackInfo,
  type PackListParams,
  type RemovePackResult,
  STOP_REPETITION,
  type ServerCommand,
  type TranslateParams,
  type TranslateResult,
} from './protocol';

/** The commands the extension contributes to VS Code (distinct from the server's `mole.*` ones). */
export const EXTENSION_COMMANDS = {
  explainSelection: 'mole.explainSelection',
  translateSelection: 'mole.translateSelection',
  installPacks: 'mole.installPacks',
  removePacks: 'mole.removePacks',
  showPacks: 'mole.showPacks',
  restartServer: 'mole.restartServer',
  showLogs: 'mole.showLogs',
  toggleInlineCompletions: 'mole.toggleInlineCompletions',
} as const;

export class ArgumentError extends Error {}

/** `workspace/executeCommand` params: `arguments` holds exactly one object (protocol.py). */
export function executeCommandParams<C extends ServerCommand>(
  command: C,
  arg: CommandSignatures[C]['params'],
): { command: C; arguments: [CommandSignatures[C]['params']] } {
  if (!(COMMANDS as readonly string[]).includes(command)) throw new ArgumentError(`Unknown server command ${command}`);
  return { command, arguments: [arg] };
}

export function isEmptyRange(r: LspRange): boolean {
  return r.start.line === r.end.line && r.start.character === r.end.character;
}

/**
 * The range a command works on: the selection, or the whole cursor line when nothing is selected.
 * `lineLength(n)` gives line n's length in UTF-16 units. Returns undefined for an empty line.
 */
export function effectiveRange(selection: LspRange, lineLength: (line: number) => number): LspRange | undefined {
  let { start, end } = selection;
  // Normalise a backwards selection.
  if (end.line < start.line || (end.line === start.line && end.character < start.character)) [start, end] = [end, start];
  if (!isEmptyRange({ start, end })) return { start: { ...start }, end: { ...end } };
  const len = lineLength(start.line);
  if (len === 0) return undefined;
  return { start: { line: start.line, character: 0 }, end: { line: start.line, character: len } };
}

export function explainArgs(uri: string, range: LspRange): ExplainParams {
  if (!uri) throw new ArgumentError('No document to explain.');
  if (isEmptyRange(range)) throw new ArgumentError('Select the code to explain.');
  return { uri, range };
}

export function translateArgs(uri: string, range: LspRange, target: string): TranslateParams {
  if (!uri) throw new ArgumentError('No document to translate.');
  if (isEmptyRange(range)) throw new ArgumentError('Select the code to translate.');
  const t = target.trim();
  if (!t) throw new ArgumentError('Choose a target language.');
  return { uri, range, target: t };
}

/** `{languages}` for install/remove: trimmed, de-duplicated, order kept, never empty. */
export function packArgs(languages: readonly string[]): PackListParams {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const raw of languages) {
    const l = raw.trim();
    if (l && !seen.has(l)) {
      seen.add(l);
      out.push(l);
    }
  }
  if (out.length === 0) throw new ArgumentError('Choose at least one language.');
  return { languages: out };
}

export const listPacksParams = (): CommandSignatures[typeof CMD_LIST_PACKS]['params'] => ({});
export const statusParams = (): CommandSignatures[typeof CMD_STATUS]['params'] => ({});

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** A quick-pick entry, independent of the vscode API. */
export interface PackItem {
  label: string;
  description: string;
  detail?: string;
  language: string;
  installed: boolean;
}

const byName = (a: PackInfo, b: PackInfo): number => a.name.localeCompare(b.name) || a.language.localeCompare(b.language);

function packItem(p: PackInfo, icon: boolean): PackItem {
  const size = formatBytes(p.sizeBytes);
  const state = p.installed ? 'installed' : p.available ? 'available' : 'not in the pack repository';
  const description = [p.language, state, size].filter(Boolean).join(' · ');
  const prefix = icon ? (p.installed ? '$(check) ' : p.available ? '$(cloud-download) ' : '$(circle-slash) ') : '';
  const detail = p.installed && p.revision ? `revision ${p.revision.slice(0, 12)}` : undefined;
  return { label: `${prefix}${p.name}`, description, detail, language: p.language, installed: p.installed };
}

/** Packs that can be installed: listed in the repository, not installed yet. */
export function installCandidates(list: ListPacksResult): PackItem[] {
  return list.packs.filter((p) => p.available && !p.installed).sort(byName).map((p) => packItem(p, false));
}

export function removeCandidates(list: ListPacksResult): PackItem[] {
  return list.packs.filter((p) => p.installed).sort(byName).map((p) => packItem(p, false));
}

/** Every pack, installed first, for the status bar menu. */
export function allPackItems(list: ListPacksResult): PackItem[] {
  const installed = list.packs.filter((p) => p.installed).sort(byName);
  const rest = list.packs.filter((p) => !p.installed).sort(byName);
  return [...installed, ...rest].map((p) => packItem(p, true));
}

/**
 * A `mole.listPacks` answer with every field the extension reads in shape: older servers send no
 * `vscodeLanguageIds` (it becomes []), and entries without a language id are dropped.
 */
export function normalizePackList(raw: ListPacksResult): ListPacksResult {
  const packs = (Array.isArray(raw.packs) ? raw.packs : [])
    .filter((p): p is PackInfo => typeof p === 'object' && p !== null && typeof p.language === 'string' && p.language !== '')
    .map((p) => ({
      ...p,
      name: typeof p.name === 'string' && p.name ? p.name : p.language,
      vscodeLanguageIds: Array.isArray(p.vscodeLanguageIds) ? p.vscodeLanguageIds.filter((x): x is string => typeof x === 'string') : [],
      installed: p.installed === true,
      available: p.available === true,
    }));
  return { ...raw, packs, offline: raw.offline === true };
}

/**
 * The pack of a VS Code languageId: the one whose `vscodeLanguageIds` lists it (the registry's map, so
 * `typescriptreact` finds the typescript pack before any request), else one whose registry id is
 * spelled the same (servers older than `vscodeLanguageIds`).
 */
export function packForLanguageId(packs: readonly PackInfo[], languageId: string | undefined): PackInfo | undefined {
  if (!languageId) return undefined;
  const id = languageId.toLowerCase();
  return (
    packs.find((p) => (p.vscodeLanguageIds ?? []).some((v) => v.toLowerCase() === id)) ??
    packs.find((p) => p.language.toLowerCase() === id)
  );
}

/**
 * Languages offered by Translate Selection To…: installed packs first, then the ones that can be
 * downloaded (not when offline). `sourceLanguage` (registry id of the selection's language, if known)
 * is left out: translating into the same language is not offered.
 */
export function translateTargets(list: ListPacksResult, sourceLanguage?: string): PackItem[] {
  const usable = list.packs.filter((p) => (p.installed || (p.available && !list.offline)) && p.language !== sourceLanguage);
  return [...usable.filter((p) => p.installed).sort(byName), ...usable.filter((p) => !p.installed).sort(byName)].map(
    (p): PackItem => {
      const size = formatBytes(p.sizeBytes);
      const description = p.installed ? p.language : `${p.language} · downloads first${size ? ` (${size})` : ''}`;
      return { label: p.name, description, language: p.language, installed: p.installed };
    },
  );
}

export interface Summary {
  severity: 'info' | 'warning' | 'error';
  message: string;
}

function errorsText(errors: Record<string, string>): string {
  return Object.entries(errors)
    .map(([lang, why]) => `${lang}: ${why}`)
    .join('; ');
}

export function summarizeInstall(result: InstallPackResult): Summary {
  const ok = result.installed ?? [];
  const errors = result.errors ?? {};
  const failed = Object.keys(errors).length;
  if (failed === 0) {
    return ok.length === 0
      ? { severity: 'info', message: 'MoLE: nothing was installed.' }
      : { severity: 'info', message: `MoLE: installed ${ok.join(', ')}.` };
  }
  const head = ok.length ? `MoLE: installed ${ok.join(', ')}; ` : 'MoLE: ';
  return { severity: ok.length ? 'warning' : 'error', message: `${head}failed: ${errorsText(errors)}` };
}

export function summarizeRemove(result: RemovePackResult): Summary {
  const ok = result.removed ?? [];
  const errors = result.errors ?? {};
  const failed = Object.keys(errors).length;
  if (failed === 0) {
    return ok.length === 0
      ? { severity: 'info', message: 'MoLE: nothing was removed.' }
      : { severity: 'info', message: `MoLE: removed ${ok.join(', ')}.` };
  }
  const head = ok.length ? `MoLE: removed ${ok.join(', ')}; ` : 'MoLE: ';
  return { severity: ok.length ? 'warning' : 'error', message: `${head}failed: ${errorsText(errors)}` };
}

/** The markdown document shown for an explanation: a short header naming the source, then the answer. */
export function explanationDocument(result: ExplainResult, fileName: string, range: LspRange): string {
  const first = range.start.line + 1;
  // A selection ending at column 0 does not include that line.
  const lastLine = range.end.character === 0 && range.end.line > range.start.line ? range.end.line : range.end.line + 1;
  const lines = first === lastLine ? `line ${first}` : `lines ${first}–${lastLine}`;
  const lang = result.language ? ` (${result.language})` : '';
  const body = (result.markdown ?? '').trim() || '_The server returned an empty explanation._';
  const note = result.stopReason === STOP_REPETITION
    ? '\n\n> _The model began repeating itself: the explanation stops before the repeated part._'
    : '';
  return `# Explanation: \`${fileName.replace(/`/g, "'")}\`, ${lines}${lang}\n\n${body}${note}\n`;
}

/** The languageId to open a translation with; `known` is VS Code's language list. */
export function translationLanguageId(result: TranslateResult, known: readonly string[]): string {
  for (const candidate of [result.vscodeLanguageId, result.language]) {
    if (candidate && known.includes(candidate)) return candidate;
  }
  return 'plaintext';
}

/** Basename of a URI or path, for titles. */
export function baseName(uriOrPath: string): string {
  const clean = uriOrPath.replace(/[?#].*$/, '').replace(/[\\/]+$/, '');
  const idx = Math.max(clean.lastIndexOf('/'), clean.lastIndexOf('\\'));
  const name = idx >= 0 ? clean.slice(idx + 1) : clean;
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}
