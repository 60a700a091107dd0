/**
 * How the server process is launched: which Python runs it (setting, Python extension, default),
 * whether that interpreter can run `mole_lsp`, the command line, and where its output goes.
 */
import * as os from 'node:os';
import * as readline from 'node:readline';
import * as vscode from 'vscode';
import type { ServerOptions, StdioOptions } from 'vscode-languageclient/node';

import {
  classifyProbe,
  describeSource,
  resolvePython,
  runProbe,
  stderrLevel,
  startupProblemMessage,
  type ResolvedPython,
  type ServerCommand,
  type StartupProblem,
  type StderrTail,
} from '../python';
import { clientSettings, workspaceTrusted } from './config';
import { activeInterpreter, interpreterFromPythonSettings, onInterpreterChanged, pythonExtensionInstalled } from './pythonExtension';

/** The interpreter picked for this start, and whether the Python extension was there to ask. */
export interface Interpreter {
  python: ResolvedPython;
  pythonExtension: boolean;
}

/** The active editor's document, else the first workspace folder: what the Python extension is asked about. */
function workspaceResource(): vscode.Uri | undefined {
  return vscode.window.activeTextEditor?.document.uri ?? vscode.workspace.workspaceFolders?.[0]?.uri;
}

/**
 * Resolves the interpreter from `mole.pythonPath` (empty: the Python extension, then the default), logging how.
 * In restricted mode the workspace may not pick it: the Python extension (whose selection and
 * settings the workspace can set) is not asked and `${workspaceFolder}` is not expanded.
 */
export async function findInterpreter(pythonPath: string, log: vscode.LogOutputChannel): Promise<Interpreter> {
  const resource = workspaceResource();
  const trusted = workspaceTrusted();
  const haveX = trusted && pythonExtensionInstalled();
  if (!trusted) log.info('Restricted mode: the interpreter comes from your user settings or PATH, not from the workspace.');
  const python = await resolvePython({
    configured: pythonPath,
    fromPythonExtension: haveX ? () => activeInterpreter(resource) : undefined,
    fromPythonSettings: haveX ? () => interpreterFromPythonSettings(resource) : undefined,
    platform: process.platform,
    variables: {
      workspaceFolder: trusted ? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath : undefined,
      env: process.env,
    },
  });
  for (const note of python.notes) log.info(note);
  log.info(`Python: ${python.command} (from ${describeSource(python.source)})`);
  return { python, pythonExtension: haveX };
}

/** True when the interpreter came from the Python extension, so its selection must be followed. */
export function followsPythonExtension(python: ResolvedPython): boolean {
  return python.source === 'pythonExtension' || python.source === 'pythonSettings';
}

/** Runs the probe; undefined when the interpreter can run the server, else what to tell the user. */
export async function checkInterpreter(found: Interpreter, log: vscode.LogOutputChannel): Promise<StartupProblem | undefined> {
  const verdict = classifyProbe(await runProbe(found.python.command));
  if (!verdict.ok) {
    log.error(`Cannot start the server: ${verdict.detail}`);
    return startupProblemMessage(verdict.kind, found.python, verdict.detail, found.pythonExtension);
  }
  log.info(
    `mole-lsp ${verdict.moleVersion ?? '(version unknown)'} at ${verdict.origin ?? '?'}; Python ${verdict.pythonVersion} (${verdict.executable})`,
  );
  return undefined;
}

/**
 * The server process: unbuffered UTF-8 output, run from the first workspace folder — in restricted
 * mode from the home folder, since `python -m` imports from its working directory first.
 */
export function serverOptions(cmd: ServerCommand): ServerOptions {
  return {
    command: cmd.command,
    args: cmd.args,
    options: {
      cwd: workspaceTrusted() ? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath : os.homedir(),
      env: { ...process.env, PYTHONUNBUFFERED: '1', PYTHONIOENCODING: 'utf-8' },
    },
  };
}

/** Server output goes to the log line by line; stderr lines are also kept in `stderr` to explain a crash. */
export function stdioOptions(stderr: StderrTail): Required<StdioOptions> {
  return {
    stdout: (input, channel) => lines(input, (line) => channel.info(line)),
    stderr: (input, channel) =>
      lines(input, (line) => {
        stderr.push(line);
        channel[stderrLevel(line)](line);
      }),
  };
}

function lines(input: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', onLine);
}

/**
 * Calls `restart` when the Python extension selects another interpreter, unless `mole.pythonPath`
 * names one. Resolves undefined when the Python extension offers no change event.
 */
export function watchInterpreter(log: vscode.LogOutputChannel, restart: () => void): Promise<vscode.Disposable | undefined> {
  return onInterpreterChanged(() => {
    if (clientSettings().settings.pythonPath) return;
    log.info('The Python extension selected another interpreter: restarting the server.');
    restart();
  });
}
