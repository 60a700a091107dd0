/**
 * The status bar menu (Show Packs): actions first, then every pack, listed while the menu is open;
 * picking a pack installs it, or removes it after a confirmation.
 */
import * as vscode from 'vscode';

import { isCancellation } from '../client/errors';
import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { EXTENSION_COMMANDS, allPackItems, listPacksParams, type PackItem } from '../commands';
import { CMD_LIST_PACKS } from '../protocol';
import type { InlineCompletion } from './inlineCompletion';
import type { PackList } from './packList';
import type { PackCommands } from './packs';

type Entry = vscode.QuickPickItem & { run?: () => unknown; pack?: PackItem };

export class StatusMenu implements Feature {
  readonly commands = {
    [EXTENSION_COMMANDS.showPacks]: () => this.showPacks(),
  };

  constructor(
    private readonly server: MoleServer,
    private readonly packs: PackList,
    private readonly packCommands: PackCommands,
    private readonly inline: InlineCompletion,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  private actions(): Entry[] {
    const languageId = vscode.window.activeTextEditor?.document.languageId;
    const inlineOn = this.inline.enabled;
    const actions: Entry[] = [
      { label: 'Actions', kind: vscode.QuickPickItemKind.Separator },
      { label: '$(cloud-download) Install Pack…', run: () => this.packCommands.install() },
      { label: '$(trash) Remove Pack…', run: () => this.packCommands.remove() },
      {
        label: inlineOn ? '$(eye-closed) Turn Inline Completions Off' : '$(eye) Turn Inline Completions On',
        run: () => this.inline.toggle(),
      },
    ];
    if (languageId) {
      const on = this.inline.languageEnabled(languageId);
      actions.push({
        label: on ? `$(circle-slash) Disable for ${languageId}` : `$(check) Enable for ${languageId}`,
        description: 'mole.enable',
        run: () => this.inline.setLanguageEnabled(languageId, !on),
      });
    }
    actions.push(
      { label: '$(output) Show Logs', run: () => this.log.show(true) },
      { label: '$(debug-restart) Restart Server', run: () => this.server.restart(true) },
    );
    return actions;
  }

  private async showPacks(): Promise<void> {
    const actions = this.actions();
    const qp = vscode.window.createQuickPick<Entry>();
    qp.title = 'MoLE';
    qp.placeholder = 'Packs and actions';
    qp.matchOnDescription = true;
    qp.items = actions;
    const cts = new vscode.CancellationTokenSource();
    if (this.server.running) {
      qp.busy = true;
      this.server
        .request(CMD_LIST_PACKS, listPacksParams(), cts.token)
        .then((raw) => {
          const list = this.packs.listed(raw);
          const header = `Packs · ${list.repo || 'default repository'}@${list.revision}${list.offline ? ' · offline' : ''}`;
          const packs: Entry[] = allPackItems(list).map((p) => ({ label: p.label, description: p.description, detail: p.detail, pack: p }));
          qp.items = [...actions, { label: header, kind: vscode.QuickPickItemKind.Separator }, ...packs];
        })
        .catch((err: unknown) => {
          if (!isCancellation(err)) {
            this.log.warn(`${CMD_LIST_PACKS} failed: ${String(err)}`);
            qp.items = [...actions, { label: 'Packs could not be listed (see logs)', kind: vscode.QuickPickItemKind.Separator }];
          }
        })
        .finally(() => {
          qp.busy = false;
        });
    }
    const picked = await new Promise<Entry | undefined>((resolve) => {
      qp.onDidAccept(() => {
        resolve(qp.selectedItems[0]);
        qp.hide();
      });
      qp.onDidHide(() => resolve(undefined));
      qp.show();
    });
    cts.cancel();
    cts.dispose();
    qp.dispose();
    if (!picked) return;
    if (picked.run) {
      await picked.run();
      return;
    }
    const pack = picked.pack;
    if (!pack) return;
    if (pack.installed) {
      const yes = await vscode.window.showWarningMessage(`Remove the ${pack.label.replace(/^\$\([^)]*\)\s*/, '')} pack from the cache?`, { modal: true }, 'Remove');
      if (yes) await this.packCommands.remove([pack]);
    } else {
      await this.packCommands.install([pack]);
    }
  }
}
