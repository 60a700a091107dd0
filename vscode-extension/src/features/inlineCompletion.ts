/**
 * Ghost text: the inline completion middleware, which asks the server only where completions are on
 * (the `mole.inlineCompletions.enable` switch and the per-language `mole.enable` map), the Toggle
 * Inline Completions command, and edits of that map.
 */
import * as vscode from 'vscode';
import type { Middleware } from 'vscode-languageclient/node';

import { clientSettings, moleConfiguration, serverSettings } from '../client/config';
import type { Feature } from '../client/feature';
import { EXTENSION_COMMANDS } from '../commands';
import { isLanguageEnabled, withLanguageEnabled } from '../settings';

/** VS Code's Trigger Inline Suggestion command. */
export const TRIGGER_INLINE_SUGGEST = 'editor.action.inlineSuggest.trigger';

export class InlineCompletion implements Feature {
  readonly commands = {
    [EXTENSION_COMMANDS.toggleInlineCompletions]: () => this.toggle(),
  };

  readonly middleware: Middleware = {
    provideInlineCompletionItems: (document, position, context, token, next) => {
      if (!this.allowed(document.languageId)) return null;
      return next(document, position, context, token);
    },
    // Ghost text covers what the server's textDocument/completion offers: asking for both would
    // run every generation twice.
    provideCompletionItem: () => null,
  };

  /** The `mole.inlineCompletions.enable` switch. */
  get enabled(): boolean {
    return clientSettings().settings.inlineCompletionsEnabled;
  }

  /** Whether `mole.enable` lets documents of this VS Code languageId have completions. */
  languageEnabled(languageId: string): boolean {
    return isLanguageEnabled(serverSettings().settings.enable, languageId);
  }

  /**
   * The server has just become ready: ask again for ghost text in the active editor. Requests made
   * while it started or loaded its model got nothing, and VS Code only asks again on the next edit.
   */
  serverReady(): void {
    const editor = vscode.window.activeTextEditor;
    if (!editor || !this.allowed(editor.document.languageId)) return;
    // Best effort: with no focused editor the command does nothing, and a failure costs only this retry.
    void Promise.resolve(vscode.commands.executeCommand(TRIGGER_INLINE_SUGGEST)).catch(() => undefined);
  }

  private allowed(languageId: string): boolean {
    if (!this.enabled) return false;
    return this.languageEnabled(languageId);
  }

  /** Flips the switch where it is set (folder, workspace, else user settings). */
  async toggle(): Promise<void> {
    const config = moleConfiguration();
    const key = 'inlineCompletions.enable';
    const current = clientSettings(config).settings.inlineCompletionsEnabled;
    const info = config.inspect<boolean>(key);
    const target =
      info?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : info?.workspaceValue !== undefined
          ? vscode.ConfigurationTarget.Workspace
          : vscode.ConfigurationTarget.Global;
    await config.update(key, !current, target);
    vscode.window.setStatusBarMessage(`MoLE: inline completions ${current ? 'off' : 'on'}`, 3000);
  }

  /** Sets one language's entry of `mole.enable` (in the workspace when it has the map, else for the user). */
  async setLanguageEnabled(languageId: string, enabled: boolean): Promise<void> {
    const config = moleConfiguration();
    const info = config.inspect<Record<string, boolean>>('enable');
    const target = info?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    const base = (target === vscode.ConfigurationTarget.Workspace ? info?.workspaceValue : info?.globalValue) ?? serverSettings().settings.enable;
    await config.update('enable', withLanguageEnabled(base, languageId, enabled), target);
  }
}
