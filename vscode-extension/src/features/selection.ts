/**
 * The code Explain and Translate work on: the active editor's selection (or cursor line) in a
 * document the server sees, with its URI as the language client sends it.
 */
import * as vscode from 'vscode';

import { DOCUMENT_SELECTOR, type MoleServer } from '../client/server';
import { effectiveRange } from '../commands';
import type { LspRange } from '../protocol';

export interface SourceCode {
  editor: vscode.TextEditor;
  range: LspRange;
  uri: string;
}

function selectionRange(editor: vscode.TextEditor): LspRange | undefined {
  const sel = editor.selection;
  return effectiveRange(
    { start: { line: sel.start.line, character: sel.start.character }, end: { line: sel.end.line, character: sel.end.character } },
    (line) => editor.document.lineAt(line).text.length,
  );
}

/**
 * The code to `action` ("explain", "translate"); undefined, after a warning saying why, when there is
 * none. Throws NotRunning first when the server is down.
 */
export function sourceCode(server: MoleServer, action: string): SourceCode | undefined {
  const client = server.runningClient();
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    void vscode.window.showWarningMessage(`MoLE: open a file and select the code to ${action}.`);
    return undefined;
  }
  if (!vscode.languages.match(DOCUMENT_SELECTOR, editor.document)) {
    void vscode.window.showWarningMessage(`MoLE works on files and untitled editors, not on ${editor.document.uri.scheme}: documents.`);
    return undefined;
  }
  const range = selectionRange(editor);
  if (!range) {
    void vscode.window.showWarningMessage(`MoLE: select the code to ${action} (the cursor line is empty).`);
    return undefined;
  }
  return { editor, range, uri: client.code2ProtocolConverter.asUri(editor.document.uri) };
}
