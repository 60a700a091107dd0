/**
 * Which Python runs the server, how it is started, and what to tell the user when it cannot be.
 * No 'vscode' import: the glue hands in the sources (settings, the Python extension's API).
 */
import { execFile } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';

export type PythonSource = 'setting' | 'pythonExtension' | 'pythonSettings' | 'default';

export interface ResolvedPython {
  command: string;
  source: PythonSource;
  /** Why earlier sources were skipped (for the log). */
  notes: string[];
}

export interface PythonSources {
  /** mole.pythonPath, variables not yet expanded; '' or undefined = not set. */
  configured?: string;
  /** Active interpreter from the ms-python.python extension API; absent when it is not installed. */
  fromPythonExtension?: () => Promise<string | undefined>;
  /** The Python extension's own settings (python.defaultInterpreterPath), read when its API fails. */
  fromPythonSettings?: () => string | undefined;
  platform: NodeJS.Platform;
  variables?: VariableContext;
}

export interface VariableContext {
  workspaceFolder?: string;
  home?: string;
  env?: Record<string, string | undefined>;
}

/** The interpreter tried when nothing else names one. */
export function defaultPython(platform: NodeJS.Platform): string {
  return platform === 'win32' ? 'python' : 'python3';
}

/**
 * Expands `~`, `${userHome}`, `${workspaceFolder}` and `${env:NAME}` in a configured path.
 * Unknown variables are left as they are (the probe then reports the path as not found).
 */
export function expandVariables(value: string, ctx: VariableContext = {}): string {
  const home = ctx.home ?? os.homedir();
  let out = value.trim();
  if (out === '~') out = home;
  else if (out.startsWith('~/') || out.startsWith('~\\')) out = path.join(home, out.slice(2));
  return out.replace(/\$\{([^}]+)\}/g, (whole: string, name: string) => {
    if (name === 'userHome') return home;
    if (name === 'workspaceFolder') return ctx.workspaceFolder ?? whole;
    if (name.startsWith('env:')) return ctx.env?.[name.slice(4)] ?? '';
    return whole;
  });
}

/**
 * Resolution order: mole.pythonPath, then the Python extension's active interpreter (its API, then its
 * settings), then `python3` (`python` on Windows). A source that throws is skipped with a note.
 */
export async function resolvePython(sources: PythonSources): Promise<ResolvedPython> {
  const notes: string[] = [];
  const configured = sources.configured?.trim();
  if (configured) {
    return { command: expandVariables(configured, sources.variables), source: 'setting', notes };
  }
  if (sources.fromPythonExtension) {
    try {
      const fromApi = (await sources.fromPythonExtension())?.trim();
      if (fromApi) return { command: fromApi, source: 'pythonExtension', notes };
      notes.push('The Python extension reports no active interpreter.');
    } catch (err) {
      notes.push(`The Python extension's API failed: ${errorText(err)}`);
    }
    try {
      const fromSettings = sources.fromPythonSettings?.()?.trim();
      if (fromSettings) {
        return { command: expandVariables(fromSettings, sources.variables), source: 'pythonSettings', notes };
      }
    } catch (err) {
      notes.push(`Reading the Python extension's settings failed: ${errorText(err)}`);
    }
  }
  return { command: defaultPython(sources.platform), source: 'default', notes };
}

export function describeSource(source: PythonSource): string {
  switch (source) {
    case 'setting':
      return 'mole.pythonPath';
    case 'pythonExtension':
      return "the Python extension's selected interpreter";
    case 'pythonSettings':
      return 'python.defaultInterpreterPath';
    case 'default':
      return 'the default interpreter on PATH';
  }
}

export interface ServerCommand {
  command: string;
  args: string[];
}

/** `<python> -m mole_lsp serve [serverArgs...]` (stdio is the server's default transport). */
export function serverCommand(python: string, serverArgs: readonly string[] = []): ServerCommand {
  return { command: python, args: ['-m', 'mole_lsp', 'serve', ...serverArgs] };
}

export const MIN_PYTHON: readonly [number, number] = [3, 11];

/**
 * A quick check run before the server starts. It finds the package without importing it
 * (importing would load torch and take seconds).
 */
export const PROBE_SCRIPT = [
  'import importlib.util, json, sys',
  'spec = importlib.util.find_spec("mole_lsp")',
  'version = None',
  'try:',
  '    import importlib.metadata as md',
  '    version = md.version("mole-lsp")',
  'except Exception:',
  '    pass',
  'print(json.dumps({"python": list(sys.version_info[:3]), "executable": sys.executable,',
  '                  "origin": spec.origin if spec else None, "found": spec is not None, "version": version}))',
].join('\n');

export interface ProbeOutcome {
  /** Node's error code when the process could not run (ENOENT, EACCES, ETIMEDOUT...). */
  spawnError?: string;
  spawnMessage?: string;
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut?: boolean;
}

export type ProblemKind = 'pythonNotFound' | 'pythonNotExecutable' | 'pythonTooOld' | 'notInstalled' | 'probeFailed';

export type ProbeVerdict =
  | { ok: true; executable: string; pythonVersion: string; moleVersion: string | null; origin: string | null }
  | { ok: false; kind: ProblemKind; detail: string };

/** Turns the probe's raw outcome into "ready to start" or a named problem. */
export function classifyProbe(outcome: ProbeOutcome): ProbeVerdict {
  if (outcome.timedOut) {
    return { ok: false, kind: 'probeFailed', detail: 'The interpreter did not answer within the time limit.' };
  }
  if (outcome.spawnError === 'ENOENT') {
    return { ok: false, kind: 'pythonNotFound', detail: outcome.spawnMessage ?? 'No such file or command.' };
  }
  if (outcome.spawnError === 'EACCES' || outcome.spawnError === 'EISDIR' || outcome.spawnError === 'ENOTDIR') {
    return { ok: false, kind: 'pythonNotExecutable', detail: outcome.spawnMessage ?? outcome.spawnError };
  }
  if (outcome.spawnError) {
    return { ok: false, kind: 'probeFailed', detail: outcome.spawnMessage ?? outcome.spawnError };
  }
  // A POSIX shell answers 127 for a missing command (e.g. through a wrapper script).
  if (outcome.exitCode === 127 && !outcome.stdout.trim()) {
    return { ok: false, kind: 'pythonNotFound', detail: lastLines(outcome.stderr) || 'exit status 127' };
  }
  const line = outcome.stdout.trim().split(/\r?\n/).pop() ?? '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    const why = lastLines(outcome.stderr) || lastLines(outcome.stdout) || `exit status ${String(outcome.exitCode)}`;
    // Python 2 and very old Pythons fail on the script itself.
    return { ok: false, kind: 'probeFailed', detail: why };
  }
  if (!isProbeJson(parsed)) {
    return { ok: false, kind: 'probeFailed', detail: `Unexpected probe answer: ${line}` };
  }
  const [major, minor, micro] = parsed.python;
  const pythonVersion = `${major}.${minor}.${micro}`;
  if (major < MIN_PYTHON[0] || (major === MIN_PYTHON[0] && minor < MIN_PYTHON[1])) {
    return {
      ok: false,
      kind: 'pythonTooOld',
      detail: `${parsed.executable} is Python ${pythonVersion}; mole-lsp needs ${MIN_PYTHON.join('.')} or newer.`,
    };
  }
  if (!parsed.found) {
    return { ok: false, kind: 'notInstalled', detail: `No module named 'mole_lsp' in ${parsed.executable} (Python ${pythonVersion}).` };
  }
  return {
    ok: true,
    executable: parsed.executable,
    pythonVersion,
    moleVersion: parsed.version,
    origin: parsed.origin,
  };
}

interface ProbeJson {
  python: [number, number, number];
  executable: string;
  origin: string | null;
  found: boolean;
  version: string | null;
}

function isProbeJson(v: unknown): v is ProbeJson {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    Array.isArray(o.python) &&
    o.python.length === 3 &&
    o.python.every((n) => typeof n === 'number') &&
    typeof o.executable === 'string' &&
    typeof o.found === 'boolean'
  );
}

function lastLines(text: string, count = 3): string {
  return text.trim().split(/\r?\n/).slice(-count).join('\n').trim();
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs the probe with `python`; never rejects. */
export function runProbe(python: string, timeoutMs = 15000, env?: NodeJS.ProcessEnv): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    try {
      execFile(
        python,
        ['-c', PROBE_SCRIPT],
        { timeout: timeoutMs, windowsHide: true, env, maxBuffer: 1024 * 1024 },
        (error, stdout, stderr) => {
          const out = String(stdout);
          const err = String(stderr);
          if (!error) {
            resolve({ exitCode: 0, stdout: out, stderr: err });
            return;
          }
          const e = error as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null; code?: unknown };
          if (typeof e.code === 'string') {
            resolve({ spawnError: e.code, spawnMessage: e.message, exitCode: null, stdout: out, stderr: err });
          } else if (e.killed && e.signal) {
            resolve({ timedOut: true, exitCode: null, stdout: out, stderr: err });
          } else {
            resolve({ exitCode: typeof e.code === 'number' ? e.code : null, stdout: out, stderr: err });
          }
        },
      );
    } catch (err) {
      // execFile throws synchronously for some invalid arguments (e.g. an empty command).
      const e = err as NodeJS.ErrnoException;
      resolve({ spawnError: e.code ?? 'EINVAL', spawnMessage: e.message, exitCode: null, stdout: '', stderr: '' });
    }
  });
}

/** Quotes `python` for a terminal of `platform` and appends `-m pip install mole-lsp`. */
export function pipInstallCommandLine(python: string, platform: NodeJS.Platform): string {
  const needsQuotes = /[\s"'$`&|;()<>]/.test(python);
  if (platform === 'win32') {
    // PowerShell (the default terminal) runs a quoted path only after the call operator.
    return needsQuotes ? `& "${python}" -m pip install mole-lsp` : `${python} -m pip install mole-lsp`;
  }
  const quoted = needsQuotes ? `'${python.replace(/'/g, `'\\''`)}'` : python;
  return `${quoted} -m pip install mole-lsp`;
}

export type StartupAction = 'installPackage' | 'openSettings' | 'selectInterpreter' | 'showLogs' | 'retry';

export interface StartupProblem {
  message: string;
  actions: StartupAction[];
}

/** The error shown when the server cannot be started, with the buttons that fix it. */
export function startupProblemMessage(
  kind: ProblemKind,
  python: ResolvedPython,
  detail: string,
  pythonExtensionInstalled: boolean,
): StartupProblem {
  const from = describeSource(python.source);
  const pick: StartupAction[] = pythonExtensionInstalled ? ['selectInterpreter', 'openSettings'] : ['openSettings'];
  switch (kind) {
    case 'pythonNotFound':
      return {
        message:
          `MoLE: Python interpreter "${python.command}" (from ${from}) was not found. ` +
          'Install Python 3.11+ or set mole.pythonPath to the interpreter that has mole-lsp installed.',
        actions: [...pick, 'showLogs'],
      };
    case 'pythonNotExecutable':
      return {
        message: `MoLE: "${python.command}" (from ${from}) cannot be run (${detail}). Set mole.pythonPath to a Python executable.`,
        actions: [...pick, 'showLogs'],
      };
    case 'pythonTooOld':
      return {
        message: `MoLE: ${detail} Choose a newer interpreter.`,
        actions: [...pick, 'showLogs'],
      };
    case 'notInstalled':
      return {
        message:
          `MoLE: the mole_lsp module is not installed for "${python.command}" (from ${from}). ` +
          'Run "pip install mole-lsp" in that environment, or point mole.pythonPath at one where it is installed.',
        actions: ['installPackage', ...pick, 'retry'],
      };
    case 'probeFailed':
      return {
        message: `MoLE: checking "${python.command}" (from ${from}) failed: ${detail}`,
        actions: ['showLogs', 'openSettings', 'retry'],
      };
  }
}

export const ACTION_LABELS: Record<StartupAction, string> = {
  installPackage: 'Install mole-lsp (pip)',
  openSettings: 'Open Settings',
  selectInterpreter: 'Select Interpreter',
  showLogs: 'Show Logs',
  retry: 'Retry',
};

export type LogLevel = 'error' | 'warn' | 'info';

/** The log level for one line the server printed on stderr (Python logging writes every level there). */
export function stderrLevel(line: string): LogLevel {
  if (/\b(CRITICAL|ERROR|FATAL)\b|^Traceback \(most recent call last\)|^\w*(Error|Exception)\b|^\s*\w+(\.\w+)*(Error|Exception): /.test(line)) {
    return 'error';
  }
  if (/\bWARN(ING)?\b/.test(line)) return 'warn';
  return 'info';
}

/** Keeps the last lines the server printed on stderr, to explain a failed start. */
export class StderrTail {
  private readonly lines: string[] = [];

  constructor(private readonly max = 40) {}

  push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
  }

  clear(): void {
    this.lines.length = 0;
  }

  /** The most telling line: the last exception line, else the last non-empty line. */
  reason(): string | undefined {
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const l = (this.lines[i] ?? '').trim();
      if (/^\w+(\.\w+)*(Error|Exception|Exit|Interrupt)\b/.test(l)) return l;
    }
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const l = (this.lines[i] ?? '').trim();
      if (l) return l;
    }
    return undefined;
  }
}
