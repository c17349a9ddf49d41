// Validates Kubernetes manifests against the OpenAPI schemas that the npm packages
// kubernetes-models and @kubernetes-models/prometheus-operator ship (offline; no cluster).
//   npm install --prefix DIR kubernetes-models @kubernetes-models/prometheus-operator js-yaml
//   node deploy/k8s/check_schemas.mjs DIR/node_modules FILE.yaml...
// Exit 0 when every document validates; 1 with the errors otherwise.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, ...files] = process.argv.slice(2);
const load = (p) => import(pathToFileURL(path.join(modules, p)).href);
const yaml = await load('js-yaml/dist/js-yaml.mjs');

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const file = group === 'monitoring.coreos.com'
    ? `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}.js`
    : `kubernetes-models/${group ? group + '/' : ''}${version}/${kind}.js`;
  if (!fs.existsSync(path.join(modules, file))) return null;
  return (await load(file))[kind];
}

let failures = 0;
let checked = 0;
for (const file of files) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, 'utf8'))) {
    if (doc == null) continue;
    if (doc.apiVersion === 'kustomize.config.k8s.io/v1beta1') continue;  // kustomize's own file
    const name = `${file}: ${doc.kind} ${doc.metadata && doc.metadata.name}`;
    const Model = await modelFor(doc.apiVersion, doc.kind);
    if (!Model) {
      console.log(`FAIL ${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
      failures++;
      continue;
    }
    try {
      new Model(doc).validate();
      console.log(`ok   ${name} (${doc.apiVersion})`);
      checked++;
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message}`);
      failures++;
    }
  }
}
console.log(`${checked} valid, ${failures} invalid`);
process.exit(failures ? 1 : 0);
