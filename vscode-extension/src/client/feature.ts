/**
 * The unit every editor feature is: what it contributes (VS Code commands, language-client
 * middleware, server notification handlers) and the hooks it needs as the server comes and goes.
 * extension.ts registers the commands; MoleServer gives the middleware and handlers to each client it
 * starts and calls the hooks.
 */
import type * as vscode from 'vscode';
import type { Middleware } from 'vscode-languageclient/node';

import type { ConfigChange } from '../settings';

export interface Feature {
  /** Commands it runs, by id (every id is an EXTENSION_COMMANDS entry contributed in package.json). */
  readonly commands?: Readonly<Record<string, () => unknown>>;
  /** Middleware for every language client; two features may not claim the same hook. */
  readonly middleware?: Middleware;
  /** Server notifications it handles, by method (names from protocol.ts). */
  readonly notifications?: Readonly<Record<string, (params: unknown) => void>>;
  /**
   * A server is starting, stopped or crashed: forget what the last one said. Silent: the phase change
   * that follows redraws the status bar.
   */
  reset?(): void;
  /** The server is running; `config` is the `mole` section as read when this start began. */
  started?(config: vscode.WorkspaceConfiguration): Promise<void> | void;
  /** `mole.*` settings changed (not the ones that restart the server). */
  configurationChanged?(change: ConfigChange): void;
}

type Hooks = Record<string, unknown>;

const isGroup = (v: unknown): v is Hooks => typeof v === 'object' && v !== null;

function mergeInto(into: Hooks, from: Hooks, path: string): Hooks {
  for (const [key, value] of Object.entries(from)) {
    const have = into[key];
    if (have === undefined) into[key] = isGroup(value) ? mergeInto({}, value, `${path}${key}.`) : value;
    else if (isGroup(have) && isGroup(value)) mergeInto(have, value, `${path}${key}.`);
    else throw new Error(`Two features contribute the middleware ${path}${key}.`);
  }
  return into;
}

/** One middleware object from the features' (nested groups such as `workspace` are merged too). */
export function mergeMiddleware(features: readonly Feature[]): Middleware {
  const merged: Hooks = {};
  for (const f of features) if (f.middleware) mergeInto(merged, f.middleware as Hooks, '');
  return merged as Middleware;
}
