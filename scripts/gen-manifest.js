// Writes oclif.manifest.json: the list of `seng` commands with their flags, made by oclif's own
// discovery of dist/src/cli/commands. With it, every `seng` start imports only the command
// that runs instead of all of them (start-up ≈ 0.75 s → 0.3 s on the 2-vCPU test machine).
// `npm run build` (build:ts) runs this after tsc, so the manifest always matches dist/; it
// is not checked in. A command that fails to load fails this script.
//   node scripts/gen-manifest.js [OUT_DIR]   (default: the package root)
import { writeFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Discovers the compiled commands under `root` and writes the manifest into `outDir`. */
export async function writeManifest(outDir = root) {
  const { Plugin } = await import('@oclif/core');
  const plugin = new Plugin({ root, type: 'core', ignoreManifest: true, errorOnManifestCreate: true });
  await plugin.load();
  const file = join(outDir, 'oclif.manifest.json');
  writeFileSync(file, JSON.stringify(plugin.manifest));
  return file;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const out = process.argv[2] ? resolve(process.argv[2]) : root;
  const file = await writeManifest(out);
  console.log(`wrote ${file}`);
}
