/**
 * What the status bar item says. Pure: the glue feeds in the client's state, the last `mole/status`,
 * running work-done progress, the active editor and the last pack list, and copies the result onto a
 * StatusBarItem.
 */
import { packForLanguageId } from './commands';
import { STATES, type PackInfo, type State, type Status } from './protocol';

export type ClientPhase = 'stopped' | 'starting' | 'running' | 'failed';

export interface ProgressInfo {
  title: string;
  message?: string;
  percentage?: number;
}

/** The expert that answered the last request of the active editor's document. */
export interface ExpertSeen {
  /** Registry id of the document's language. */
  language: string;
  /** Expert pack that answered (null: none, the shared adapter alone). */
  expert: string | null;
  baseOnly: boolean;
}

export interface ViewInput {
  client: ClientPhase;
  /** Why the client failed or stopped (shown in the tooltip). */
  clientDetail?: string;
  server?: Status;
  progress?: ProgressInfo;
  /** The active editor's document URI, converted as the language client sends it; undefined: no editor. */
  editorUri?: string;
  /** VS Code languageId of the active editor, if any. */
  editorLanguageId?: string;
  /** The packs of the last `mole.listPacks`; undefined until the server answered one. */
  packs?: readonly PackInfo[];
  inlineEnabled: boolean;
  languageEnabled: boolean;
}

/**
 * The expert of the last finished generation, when it came from the active editor's document (same
 * URI, and same languageId when the server says which): a status about another document, or about a
 * translation (`activeUri` null), says nothing about this editor.
 */
export function expertForEditor(status: Status | undefined, editorUri?: string, editorLanguageId?: string): ExpertSeen | undefined {
  if (!status || !editorUri || status.activeUri !== editorUri) return undefined;
  if (status.vscodeLanguageId && editorLanguageId && status.vscodeLanguageId !== editorLanguageId) return undefined;
  const language = status.activeLanguage ?? editorLanguageId;
  if (!language) return undefined;
  return { language, expert: status.activeExpert, baseOnly: status.baseOnly };
}

export type Severity = 'normal' | 'warning' | 'error';

export interface View {
  text: string;
  /** Markdown. */
  tooltip: string;
  severity: Severity;
}

const BRAND = 'MoLE';

/** "rust", "typescript→javascript" (fallback expert), "python→shared" (no expert), "go→base". */
export function expertLabel(seen: ExpertSeen): string {
  if (seen.baseOnly) return `${seen.language}→base`;
  if (seen.expert === null) return `${seen.language}→shared`;
  if (seen.expert === seen.language) return seen.language;
  return `${seen.language}→${seen.expert}`;
}

function percent(p?: ProgressInfo): string {
  if (!p || p.percentage === undefined || !Number.isFinite(p.percentage)) return '';
  const n = Math.max(0, Math.min(100, Math.round(p.percentage)));
  return ` ${n}%`;
}

function escapeMd(text: string): string {
  return text.replace(/([\\`*_{}[\]()#+\-.!|<>])/g, '\\$1');
}

/** "rust (installed)", "go (not installed)", "cobol (no pack)": a pack's state in the status bar. */
export function packLabel(pack: PackInfo): string {
  return `${pack.language} (${pack.installed ? 'installed' : pack.available ? 'not installed' : 'no pack'})`;
}

function packLine(pack: PackInfo, offline: boolean): string {
  const lang = escapeMd(pack.language);
  if (pack.installed) return `The ${lang} expert pack is installed; no completion from this document yet.`;
  if (pack.available && offline) return `The ${lang} expert pack is not installed and cannot be downloaded offline: the shared adapter or a fallback expert answers.`;
  if (pack.available) {
    return `The ${lang} expert pack is not installed: it is downloaded the first time a ${lang} document asks for a completion (mole.autoInstallPacks), or install it from the menu.`;
  }
  return `The pack repository has no ${lang} expert: the shared adapter or a fallback expert answers.`;
}

interface Subject {
  /** The expert that answered this editor's document last. */
  seen?: ExpertSeen;
  /** Otherwise, the pack of the editor's language (from mole.listPacks). */
  pack?: PackInfo;
}

function tooltipLines(input: ViewInput, headline: string, subject: Subject): string {
  const lines = [`**${BRAND}** — ${escapeMd(headline)}`];
  const s = input.server;
  if (subject.seen) {
    const e = subject.seen;
    const who = e.baseOnly ? 'the base model alone' : e.expert === null ? 'the shared adapter (no expert)' : `the ${e.expert} expert`;
    lines.push(`This ${escapeMd(e.language)} document was last answered by ${escapeMd(who)}.`);
  } else if (subject.pack) {
    lines.push(packLine(subject.pack, s?.offline === true));
  } else if (input.editorLanguageId && input.client === 'running') {
    lines.push(
      input.packs
        ? `No expert pack is listed for ${escapeMd(input.editorLanguageId)} documents; no request yet from this one.`
        : `No request yet from this ${escapeMd(input.editorLanguageId)} document.`,
    );
  }
  if (s?.baseOnly) lines.push('Base model only: no core pack is installed, answers come from the bare base model.');
  if (s?.offline) lines.push('Offline: only packs already in the cache are used.');
  if (s?.message) lines.push(`Server: ${escapeMd(s.message)}`);
  if (input.progress) {
    const p = input.progress;
    lines.push(`In progress: ${escapeMd(p.title)}${p.message ? ` — ${escapeMd(p.message)}` : ''}${percent(p)}`);
  }
  if (input.clientDetail) lines.push(escapeMd(input.clientDetail));
  if (!input.inlineEnabled) lines.push('Inline completions are switched off (MoLE: Toggle Inline Completions).');
  else if (!input.languageEnabled && input.editorLanguageId) {
    lines.push(`Disabled for ${escapeMd(input.editorLanguageId)} by mole.enable.`);
  }
  lines.push('Click for packs and actions.');
  return lines.join('\n\n');
}

function offlineSuffix(input: ViewInput): string {
  return input.server?.offline ? ' (offline)' : '';
}

/** Renders the status bar item for every combination of client and server state. */
export function renderStatus(input: ViewInput): View {
  const seen = expertForEditor(input.server, input.editorUri, input.editorLanguageId);
  const pack = seen || !input.packs ? undefined : packForLanguageId(input.packs, input.editorLanguageId);
  const subject: Subject = { seen, pack };
  const make = (text: string, headline: string, severity: Severity): View => ({
    text,
    tooltip: tooltipLines(input, headline, subject),
    severity,
  });

  if (input.client === 'failed') {
    return make(`$(error) ${BRAND}: not running`, 'the server is not running', 'error');
  }
  if (input.client === 'stopped') {
    return make(`$(debug-stop) ${BRAND}: stopped`, 'the server is stopped', 'warning');
  }
  const s = input.server;
  if (input.client === 'starting' || !s || s.state === 'starting') {
    return make(`$(loading~spin) ${BRAND}: starting${percent(input.progress)}`, 'the server is starting', 'normal');
  }
  if (s.state === 'error') {
    return make(`$(error) ${BRAND}: error`, s.message ?? 'the server reported an error', 'error');
  }
  if (s.state === 'downloading') {
    const what = input.progress?.message ?? s.message ?? 'downloading';
    return make(`$(cloud-download) ${BRAND}: ${short(what)}${percent(input.progress)}`, 'downloading', 'normal');
  }
  if (s.state === 'loading') {
    return make(`$(loading~spin) ${BRAND}: loading${percent(input.progress)}`, 'loading the model', 'normal');
  }
  if (input.progress) {
    // Work-done progress the server started outside the two states above (e.g. installing a pack).
    return make(`$(sync~spin) ${BRAND}: ${short(input.progress.title)}${percent(input.progress)}`, input.progress.title, 'normal');
  }
  const suffix = offlineSuffix(input);
  if (!input.inlineEnabled) {
    return make(`$(circle-slash) ${BRAND}: inline off${suffix}`, 'inline completions are off', 'normal');
  }
  if (!input.languageEnabled && input.editorLanguageId) {
    return make(`$(circle-slash) ${BRAND}: off for ${input.editorLanguageId}${suffix}`, 'disabled for this language', 'normal');
  }
  const icon = s.state === 'generating' ? '$(sync~spin)' : '$(hubot)';
  const headline = s.state === 'generating' ? 'generating' : 'ready';
  if (seen) {
    return make(`${icon} ${BRAND}: ${expertLabel(seen)}${suffix}`, headline, seen.baseOnly ? 'warning' : 'normal');
  }
  if (s.baseOnly) {
    return make(`${icon} ${BRAND}: base only${suffix}`, 'ready (base model only)', 'warning');
  }
  if (pack) return make(`${icon} ${BRAND}: ${packLabel(pack)}${suffix}`, headline, 'normal');
  return make(`${icon} ${BRAND}${suffix}`, headline, 'normal');
}

function short(text: string, max = 32): string {
  const t = text.trim();
  return t.length <= max ? t : `${t.slice(0, max - 1)}…`;
}

export type ProgressEvent =
  | { kind: 'begin'; title: string; message?: string; percentage?: number }
  | { kind: 'report'; message?: string; percentage?: number }
  | { kind: 'end'; message?: string };

/** Follows the server's `$/progress` tokens; `current()` is the most recently begun one still running. */
export class ProgressTracker {
  private readonly active = new Map<string, ProgressInfo>();

  apply(token: string | number, event: ProgressEvent): void {
    const key = String(token);
    if (event.kind === 'begin') {
      // Re-insert so the newest begun token is last.
      this.active.delete(key);
      this.active.set(key, { title: event.title, message: event.message, percentage: event.percentage });
      return;
    }
    if (event.kind === 'end') {
      this.active.delete(key);
      return;
    }
    const info = this.active.get(key);
    if (!info) return;
    if (event.message !== undefined) info.message = event.message;
    if (event.percentage !== undefined) info.percentage = event.percentage;
  }

  current(): ProgressInfo | undefined {
    let last: ProgressInfo | undefined;
    for (const info of this.active.values()) last = info;
    return last ? { ...last } : undefined;
  }

  clear(): void {
    this.active.clear();
  }
}

/**
 * Decides whether a crashed server is restarted: at most `maxRestarts` within `windowMs`.
 */
export class CrashTracker {
  private crashes: number[] = [];

  constructor(
    private readonly maxRestarts = 3,
    private readonly windowMs = 3 * 60 * 1000,
  ) {}

  /** Records a crash at `now`; true when another automatic restart is allowed. */
  crashed(now: number): boolean {
    this.crashes = this.crashes.filter((t) => now - t <= this.windowMs);
    this.crashes.push(now);
    return this.crashes.length <= this.maxRestarts;
  }

  get recentCrashes(): number {
    return this.crashes.length;
  }

  reset(): void {
    this.crashes = [];
  }
}

/** Checks a `mole/status` payload; missing optional fields become null/false, a bad state rejects it. */
export function coerceStatus(raw: unknown): Status | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const o = raw as Record<string, unknown>;
  if (typeof o.state !== 'string' || !(STATES as readonly string[]).includes(o.state)) return undefined;
  const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
  return {
    state: o.state as State,
    activeExpert: str(o.activeExpert),
    activeLanguage: str(o.activeLanguage),
    // Older servers send neither: their status is then never taken for the active editor's.
    activeUri: str(o.activeUri),
    vscodeLanguageId: str(o.vscodeLanguageId),
    baseOnly: o.baseOnly === true,
    offline: o.offline === true,
    message: str(o.message),
  };
}
