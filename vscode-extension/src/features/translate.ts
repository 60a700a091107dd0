/**
 * Translate Selection To…: offers the languages the packs cover (not the selection's own), sends
 * `mole.translate` and opens the translation in a new editor beside.
 */
import * as vscode from 'vscode';

import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { EXTENSION_COMMANDS, packForLanguageId, translateArgs, translateTargets, translationLanguageId } from '../commands';
import { CMD_TRANSLATE, type Status } from '../protocol';
import { expertForEditor } from '../statusView';
import type { PackList } from './packList';
import { withProgress } from './progress';
import { sourceCode } from './selection';

export class Translate implements Feature {
  readonly commands = {
    [EXTENSION_COMMANDS.translateSelection]: () => this.translateSelection(),
  };

  /** `lastStatus` gives the server's last `mole/status` (it may name the selection's language). */
  constructor(
    private readonly server: MoleServer,
    private readonly packs: PackList,
    private readonly lastStatus: () => Status | undefined,
  ) {}

  private async translateSelection(): Promise<void> {
    const src = sourceCode(this.server, 'translate');
    if (!src) return;
    const list = await this.packs.fetch();
    if (!list) return;
    // The selection's language: the registry's languageId map, else what the server last said about
    // this very document.
    const sourceId = src.editor.document.languageId;
    const sourceLanguage = packForLanguageId(list.packs, sourceId)?.language ?? expertForEditor(this.lastStatus(), src.uri, sourceId)?.language;
    const targets = translateTargets(list, sourceLanguage);
    if (targets.length === 0) {
      const others = translateTargets(list).length > 0;
      void vscode.window.showWarningMessage(
        others
          ? `MoLE: no language other than ${sourceLanguage ?? sourceId} to translate to${list.offline ? ' (offline: installed packs only)' : ''}.`
          : list.offline
            ? 'MoLE: offline and no expert pack installed: nothing to translate to.'
            : 'MoLE: the pack repository lists no languages.',
      );
      return;
    }
    const pick = await vscode.window.showQuickPick(targets, {
      title: 'MoLE: Translate Selection To…',
      placeHolder: 'Target language',
      matchOnDescription: true,
    });
    if (!pick) return;
    const args = translateArgs(src.uri, src.range, pick.language);
    const result = await withProgress(`MoLE: translating to ${pick.label}…`, (token) => this.server.request(CMD_TRANSLATE, args, token));
    if (!result) return;
    const languageId = translationLanguageId(result, await vscode.languages.getLanguages());
    const doc = await vscode.workspace.openTextDocument({ language: languageId, content: result.code });
    await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside });
  }
}
