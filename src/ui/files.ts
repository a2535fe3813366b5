// Files from a drop or a file picker, with their paths inside a dropped folder
// (FileSystemEntry API for drops, webkitRelativePath for <input webkitdirectory>).

export interface PickedFile {
  name: string;
  file: File;
}

function readEntries(reader: FileSystemDirectoryReader): Promise<FileSystemEntry[]> {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

async function walk(entry: FileSystemEntry, prefix: string, out: PickedFile[]): Promise<void> {
  if (entry.isFile) {
    const file = await new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject));
    out.push({ name: prefix + entry.name, file });
    return;
  }
  if (entry.isDirectory) {
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    // readEntries returns at most 100 entries per call; read until empty.
    for (;;) {
      const batch = await readEntries(reader);
      if (!batch.length) break;
      for (const e of batch) await walk(e, `${prefix}${entry.name}/`, out);
    }
  }
}

export async function filesFromDrop(ev: DragEvent): Promise<PickedFile[]> {
  const dt = ev.dataTransfer;
  if (!dt) return [];
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry?.() ?? null);
  if (entries.length && entries.every((e) => e)) {
    const out: PickedFile[] = [];
    for (const e of entries) await walk(e!, '', out);
    return out;
  }
  return [...dt.files].map((file) => ({ name: file.name, file }));
}

export function filesFromInput(input: HTMLInputElement): PickedFile[] {
  return [...(input.files ?? [])].map((file) => ({ name: file.webkitRelativePath || file.name, file }));
}
