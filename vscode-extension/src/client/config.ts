/**
 * The `mole.*` settings read through VS Code's configuration API, checked by the pure readers of
 * settings.ts. Each call reads afresh, so a changed setting is seen at once.
 */
import * as vscode from 'vscode';

import {
  SECTION,
  readClientSettings,
  readServerSettings,
  trustAwareGetter,
  type ClientSettingsReading,
  type Getter,
  type ServerSettingsReading,
} from '../settings';

/** The `mole` section as it is now (a snapshot: later changes are not seen through it). */
export function moleConfiguration(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

/** Whether the workspace is trusted (restricted mode otherwise). */
export function workspaceTrusted(): boolean {
  return vscode.workspace.isTrusted;
}

/**
 * Reads `mole.*` settings; in restricted mode the restricted ones come from the user's settings only
 * (`inspect` and `get` would hand out the workspace's values).
 */
function settingsGetter(config: vscode.WorkspaceConfiguration): Getter {
  return trustAwareGetter(
    (n) => config.get(n),
    (n) => config.inspect(n)?.globalValue,
    workspaceTrusted(),
  );
}

/** Settings only the extension uses (interpreter, server arguments, the inline toggle). */
export function clientSettings(config: vscode.WorkspaceConfiguration = moleConfiguration()): ClientSettingsReading {
  return readClientSettings(settingsGetter(config));
}

/** Settings sent to the server, with the problems of values that were rejected. */
export function serverSettings(config: vscode.WorkspaceConfiguration = moleConfiguration()): ServerSettingsReading {
  return readServerSettings(settingsGetter(config));
}
