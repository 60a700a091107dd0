/**
 * Install Pack… and Remove Pack…: pick languages from `mole.listPacks` (or take the ones the status
 * bar menu chose), run `mole.installPack` / `mole.removePack`, report the outcome.
 */
import * as vscode from 'vscode';

import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { EXTENSION_COMMANDS, installCandidates, packArgs, removeCandidates, summarizeInstall, summarizeRemove, type PackItem, type Summary } from '../commands';
import { CMD_INSTALL_PACK, CMD_REMOVE_PACK } from '../protocol';
import type { PackList } from './packList';
import { withProgress } from './progress';

export class PackCommands implements Feature {
  readonly commands = {
    [EXTENSION_COMMANDS.installPacks]: () => this.install(),
    [EXTENSION_COMMANDS.removePacks]: () => this.remove(),
  };

  constructor(
    private readonly server: MoleServer,
    private readonly packs: PackList,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** Installs `preselected`, or the packs the user picks from those not installed yet. */
  async install(preselected?: PackItem[]): Promise<void> {
    let chosen = preselected;
    if (!chosen) {
      const list = await this.packs.fetch();
      if (!list) return;
      if (list.offline) {
        void vscode.window.showWarningMessage('MoLE is offline (mole.offline or HF_HUB_OFFLINE): packs cannot be downloaded.');
        return;
      }
      const candidates = installCandidates(list);
      if (candidates.length === 0) {
        void vscode.window.showInformationMessage('MoLE: every available pack is installed.');
        return;
      }
      chosen = await vscode.window.showQuickPick(candidates, {
        title: `MoLE: Install Pack… (${list.repo}@${list.revision})`,
        placeHolder: 'Languages to install',
        canPickMany: true,
        matchOnDescription: true,
      });
    }
    if (!chosen || chosen.length === 0) return;
    const args = packArgs(chosen.map((c) => c.language));
    const result = await withProgress(`MoLE: installing ${args.languages.join(', ')}…`, (token) =>
      this.server.request(CMD_INSTALL_PACK, args, token),
    );
    this.packs.refresh();
    if (result) this.showSummary(summarizeInstall(result));
  }

  /** Removes `preselected`, or the installed packs the user picks. */
  async remove(preselected?: PackItem[]): Promise<void> {
    let chosen = preselected;
    if (!chosen) {
      const list = await this.packs.fetch();
      if (!list) return;
      const candidates = removeCandidates(list);
      if (candidates.length === 0) {
        void vscode.window.showInformationMessage('MoLE: no expert pack is installed.');
        return;
      }
      chosen = await vscode.window.showQuickPick(candidates, {
        title: 'MoLE: Remove Pack…',
        placeHolder: 'Languages to remove from the cache',
        canPickMany: true,
        matchOnDescription: true,
      });
    }
    if (!chosen || chosen.length === 0) return;
    const args = packArgs(chosen.map((c) => c.language));
    const result = await withProgress(`MoLE: removing ${args.languages.join(', ')}…`, (token) =>
      this.server.request(CMD_REMOVE_PACK, args, token),
    );
    this.packs.refresh();
    if (result) this.showSummary(summarizeRemove(result));
  }

  private showSummary(summary: Summary): void {
    const show =
      summary.severity === 'error'
        ? vscode.window.showErrorMessage
        : summary.severity === 'warning'
          ? vscode.window.showWarningMessage
          : vscode.window.showInformationMessage;
    (summary.severity === 'info' ? this.log.info : this.log.warn).call(this.log, summary.message);
    void show(summary.message, 'Show Logs').then((pick) => {
      if (pick) this.log.show(true);
    });
  }
}
