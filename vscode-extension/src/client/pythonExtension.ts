/**
 * Glue to the ms-python.python extension: its selected interpreter and its change event.
 * Only the few members used here are typed; everything is optional because older and newer
 * releases of that extension expose different parts of the API.
 */
import * as vscode from 'vscode';

export const PYTHON_EXTENSION_ID = 'ms-python.python';

interface EnvironmentPath {
  readonly id: string;
  readonly path: string;
}

interface ResolvedEnvironment {
  readonly executable: { readonly uri: vscode.Uri | undefined };
}

interface PythonApi {
  ready?: Promise<void>;
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): EnvironmentPath;
    resolveEnvironment(env: EnvironmentPath | string): Promise<ResolvedEnvironment | undefined>;
    onDidChangeActiveEnvironmentPath?: vscode.Event<unknown>;
  };
  settings?: {
    getExecutionDetails(resource?: vscode.Uri): { execCommand: string[] | undefined };
  };
}

export function pythonExtensionInstalled(): boolean {
  return vscode.extensions.getExtension(PYTHON_EXTENSION_ID) !== undefined;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000}s`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

async function api(): Promise<PythonApi | undefined> {
  const ext = vscode.extensions.getExtension<PythonApi>(PYTHON_EXTENSION_ID);
  if (!ext) return undefined;
  const exports = ext.isActive ? ext.exports : await withTimeout(Promise.resolve(ext.activate()), 20000, 'Activating the Python extension');
  return exports ?? undefined;
}

/** The active interpreter's executable for `resource`, or undefined. Throws when the API fails. */
export async function activeInterpreter(resource?: vscode.Uri): Promise<string | undefined> {
  const python = await api();
  if (!python) return undefined;
  if (python.environments) {
    const envPath = python.environments.getActiveEnvironmentPath(resource);
    const resolved = await withTimeout(python.environments.resolveEnvironment(envPath), 20000, 'Resolving the Python environment');
    const exe = resolved?.executable.uri?.fsPath;
    if (exe) return exe;
    // An environment without an executable (e.g. a conda env without python) is useless here.
    return undefined;
  }
  if (python.settings) {
    if (python.ready) await withTimeout(python.ready, 20000, 'Waiting for the Python extension');
    return python.settings.getExecutionDetails(resource).execCommand?.[0];
  }
  return undefined;
}

/** python.defaultInterpreterPath when the user set it somewhere (its built-in default "python" is ignored). */
export function interpreterFromPythonSettings(resource?: vscode.Uri): string | undefined {
  const info = vscode.workspace.getConfiguration('python', resource).inspect<string>('defaultInterpreterPath');
  return info?.workspaceFolderValue ?? info?.workspaceValue ?? info?.globalValue ?? undefined;
}

/** Fires when the user picks another interpreter in the Python extension. */
export async function onInterpreterChanged(listener: () => void): Promise<vscode.Disposable | undefined> {
  const ext = vscode.extensions.getExtension<PythonApi>(PYTHON_EXTENSION_ID);
  if (!ext) return undefined;
  try {
    const python = await api();
    const event = python?.environments?.onDidChangeActiveEnvironmentPath;
    return event ? event(() => listener()) : undefined;
  } catch {
    return undefined;
  }
}
