/**
 * What the status bar item says. Pure: the glue feeds in the client's state, the last `mole/status`,
 * running work-done progress and the active editor, and copies the result onto a StatusBarItem.
 */
import { STATES, type State, type Status } from './protocol';

export type ClientPhase = 'stopped' | 'starting' | 'running' | 'failed';

export interface ProgressInfo {
  title: string;
  message?: string;
  percentage?: number;
}

/** The expert last seen answering for a document language. */
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
  /** VS Code languageId of the active editor, if any. */
  editorLanguageId?: string;
  /** What answered last for that languageId, if known. */
  expert?: ExpertSeen;
  inlineEnabled: boolean;
  languageEnabled: boolean;
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

function tooltipLines(input: ViewInput, headline: string): string {
  const lines = [`**${BRAND}** — ${escapeMd(headline)}`];
  const s = input.server;
  if (input.expert) {
    const e = input.expert;
    const who = e.baseOnly ? 'the base model alone' : e.expert === null ? 'the shared adapter (no expert)' : `the ${e.expert} expert`;
    lines.push(`Documents in ${escapeMd(e.language)} are answered by ${escapeMd(who)}.`);
  } else if (input.editorLanguageId && input.client === 'running') {
    lines.push(`No request yet from a ${escapeMd(input.editorLanguageId)} document.`);
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
  const make = (text: string, headline: string, severity: Severity): View => ({
    text,
    tooltip: tooltipLines(input, headline),
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
  if (input.expert) {
    const label = expertLabel(input.expert);
    const severity: Severity = input.expert.baseOnly ? 'warning' : 'normal';
    return make(`${icon} ${BRAND}: ${label}${suffix}`, s.state === 'generating' ? 'generating' : 'ready', severity);
  }
  if (s.baseOnly) {
    return make(`${icon} ${BRAND}: base only${suffix}`, 'ready (base model only)', 'warning');
  }
  return make(`${icon} ${BRAND}${suffix}`, s.state === 'generating' ? 'generating' : 'ready', 'normal');
}

function short(text: string, max = 32): string {
  const t = text.trim();
  return t.length <= max ? t : `${t.slice(0, max - 1)}…`;
}

/**
 * Remembers which expert answered for each VS Code languageId. `mole/status` names the registry
 * language of the last request, not the document, so the glue records it under the languageId of the
 * editor that was active when the status arrived.
 */
export class ExpertMemory {
  private readonly seen = new Map<string, ExpertSeen>();

  record(languageId: string | undefined, status: Status): void {
    if (!languageId || !status.activeLanguage) return;
    if (status.state !== 'ready' && status.state !== 'generating') return;
    this.seen.set(languageId, {
      language: status.activeLanguage,
      expert: status.activeExpert,
      baseOnly: status.baseOnly,
    });
  }

  lookup(languageId: string | undefined): ExpertSeen | undefined {
    return languageId ? this.seen.get(languageId) : undefined;
  }

  clear(): void {
    this.seen.clear();
  }
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
    baseOnly: o.baseOnly === true,
    offline: o.offline === true,
    message: str(o.message),
  };
}
