/**
 * The `mole.*` settings read through VS Code's configuration API, checked by the pure readers of
 * settings.ts. Each call reads afresh, so a changed setting is seen at once.
 */
import * as vscode from 'vscode';

import { SECTION, readClientSettings, readServerSettings, type ClientSettingsReading, type ServerSettingsReading } from '../settings';

/** The `mole` section as it is now (a snapshot: later changes are not seen through it). */
export function moleConfiguration(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

/** Settings only the extension uses (interpreter, server arguments, the inline toggle). */
export function clientSettings(config: vscode.WorkspaceConfiguration = moleConfiguration()): ClientSettingsReading {
  return readClientSettings((n) => config.get(n));
}

/** Settings sent to the server, with the problems of values that were rejected. */
export function serverSettings(config: vscode.WorkspaceConfiguration = moleConfiguration()): ServerSettingsReading {
  return readServerSettings((n) => config.get(n));
}
