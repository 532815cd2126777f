// Builds a JavaScript broker into a component:
//   node build.mjs APP.js OUT.wasm WIT_DIR SDK.js
// Bundles the app with the SDK (`import ... from "brokerbox"`) using rolldown, then turns the
// bundle into a component of the `broker` world with componentize-js (StarlingMonkey).
// scripts/guest-tools copies this file beside the pinned tools in target/tools/js.
import { rolldown } from "rolldown";
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const [app, out, wit, sdkPath] = process.argv.slice(2);
if (!app || !out || !wit || !sdkPath) {
  console.error("usage: node build.mjs APP.js OUT.wasm WIT_DIR SDK.js");
  process.exit(2);
}
const sdk = resolve(sdkPath);
const bundle = await rolldown({
  input: resolve(app),
  resolve: { alias: { brokerbox: sdk } },
  // The contract's and WASI's interfaces are imports of the component, not modules.
  external: [/^brokerbox:/, /^wasi:/],
  logLevel: "warn",
});
const dir = await mkdtemp(join(tmpdir(), "brokerbox-js-"));
try {
  const bundled = join(dir, "app.js");
  await bundle.write({ file: bundled, format: "esm" });
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: resolve(wit),
    worldName: "broker",
    // No incoming HTTP; outbound `fetch` stays (the runtime grants hosts per manifest).
    disableFeatures: ["fetch-event"],
  });
  await writeFile(out, component);
} finally {
  await rm(dir, { recursive: true, force: true });
}
