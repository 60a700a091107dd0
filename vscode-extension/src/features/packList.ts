/**
 * The last `mole.listPacks` answer, shared by the status bar (the active editor's pack), Translate
 * (its targets) and the pack commands. Only the newest background listing is kept.
 */
import * as vscode from 'vscode';

import { isCancellation, NotRunning } from '../client/errors';
import type { Feature } from '../client/feature';
import type { MoleServer } from '../client/server';
import { listPacksParams, normalizePackList } from '../commands';
import { CMD_LIST_PACKS, type ListPacksResult } from '../protocol';
import { withProgress } from './progress';

export class PackList implements Feature {
  private list: ListPacksResult | undefined;
  /** Numbers background listings; only the newest one is kept. */
  private latest = 0;
  private readonly changed = new vscode.EventEmitter<void>();
  /** Fires when a new answer is kept. */
  readonly onDidChange = this.changed.event;

  constructor(
    private readonly server: MoleServer,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** The last answer, normalised; undefined until this server answered one. */
  get current(): ListPacksResult | undefined {
    return this.list;
  }

  reset(): void {
    this.list = undefined;
  }

  /** Lists the packs in the background for the status bar (no notification, failures only logged). */
  refresh(): void {
    if (!this.server.running) return;
    const n = ++this.latest;
    this.server
      .request(CMD_LIST_PACKS, listPacksParams())
      .then((list) => {
        if (n === this.latest) this.listed(list);
      })
      .catch((err: unknown) => {
        if (!isCancellation(err) && !(err instanceof NotRunning)) this.log.warn(`${CMD_LIST_PACKS} failed: ${err instanceof Error ? err.message : String(err)}`);
      });
  }

  /** Keeps a `mole.listPacks` answer (from any command) for the status bar; returns it normalised. */
  listed(raw: ListPacksResult): ListPacksResult {
    const list = normalizePackList(raw);
    this.list = list;
    this.changed.fire();
    return list;
  }

  /** Lists the packs under a cancellable notification, for a command; undefined when cancelled. */
  async fetch(): Promise<ListPacksResult | undefined> {
    const list = await withProgress('MoLE: listing packs…', (token) => this.server.request(CMD_LIST_PACKS, listPacksParams(), token));
    return list && this.listed(list);
  }

  dispose(): void {
    this.changed.dispose();
  }
}
