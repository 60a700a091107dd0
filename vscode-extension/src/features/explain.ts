/**
 * Explain Selection: sends the selection (or cursor line) to `mole.explain` and shows the answer as
 * a markdown preview beside the editor.
 */
import * as vscode from 'vscode';

import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { EXTENSION_COMMANDS, baseName, explainArgs, explanationDocument } from '../commands';
import { CMD_EXPLAIN } from '../protocol';
import { withProgress } from './progress';
import { sourceCode } from './selection';

export class Explain implements Feature {
  readonly commands = {
    [EXTENSION_COMMANDS.explainSelection]: () => this.explainSelection(),
  };

  constructor(
    private readonly server: MoleServer,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  private async explainSelection(): Promise<void> {
    const src = sourceCode(this.server, 'explain');
    if (!src) return;
    const args = explainArgs(src.uri, src.range);
    const result = await withProgress('MoLE: explaining…', (token) => this.server.request(CMD_EXPLAIN, args, token));
    if (!result) return;
    const content = explanationDocument(result, baseName(src.editor.document.uri.path || src.uri), src.range);
    const doc = await vscode.workspace.openTextDocument({ language: 'markdown', content });
    try {
      await vscode.commands.executeCommand('markdown.showPreviewToSide', doc.uri);
    } catch (err) {
      // The built-in markdown extension may be disabled: show the source instead.
      this.log.warn(`markdown.showPreviewToSide failed (${String(err)}); opening the markdown text.`);
      await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preview: true });
    }
  }
}
