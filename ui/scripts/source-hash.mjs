// Writes dist/.source-hash: the SHA-256 of every input of the build, so
// that ui/embed_test.go can tell when the committed dist is stale. The Go
// test computes the same hash: keep the two in step (sorted paths relative
// to ui/ with forward slashes, each as "path\0" + content + "\0").
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const files = [
  ...walk(join(root, "src")),
  // The API code the bundle is compiled from.
  ...walk(join(root, "..", "sdk", "ts", "src", "gen")),
  join(root, "index.html"),
  join(root, "package-lock.json"),
  join(root, "vite.config.ts"),
]
  .map((p) => relative(root, p).split(sep).join("/"))
  .sort();

const h = createHash("sha256");
for (const f of files) {
  h.update(f + "\0");
  h.update(readFileSync(join(root, f)));
  h.update("\0");
}
writeFileSync(join(root, "dist", ".source-hash"), h.digest("hex") + "\n");
