#!/usr/bin/env node
// Compiles the contracts in this folder with the solc-js pinned in tests/node/chain (offline, bundled
// compiler) and writes one artifact per contract: <Name>.json = { contractName, compiler, settings, abi,
// bytecode, deployedBytecode, immutableReferences }. With --check, compiles and exits non-zero if a committed artifact differs (used by the
// eth_contract_build test). Run `npm ci` in tests/node/chain first.
//
// v1/ holds the earlier PaymentChannel (claims without the chain ID), frozen: the module still recognises
// channels deployed from it in order to close and reclaim them. It is compiled on its own under its original
// source name, since the name is part of the metadata hash at the end of the bytecode.
'use strict';

const fs = require('fs');
const path = require('path');

const here = __dirname;
const solc = require(path.join(here, '..', '..', 'tests', 'node', 'chain', 'node_modules', 'solc'));

// Each build: a folder and the contracts compiled together from it (<Name>.sol → <Name>.json).
const BUILDS = [
  { dir: here, contracts: ['PaymentChannel', 'TestToken'] },
  { dir: path.join(here, 'v1'), contracts: ['PaymentChannel'] },
];
const EXPECTED_VERSION = '0.8.37';
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'evm.deployedBytecode.immutableReferences'] } },
};

function compile(dir, contracts) {
  const version = solc.version();
  if (!version.startsWith(EXPECTED_VERSION + '+')) {
    throw new Error(`solc ${version} found, ${EXPECTED_VERSION} pinned`);
  }
  const sources = {};
  for (const name of contracts) {
    sources[`${name}.sol`] = { content: fs.readFileSync(path.join(dir, `${name}.sol`), 'utf8') };
  }
  const output = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources, settings: SETTINGS })));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  if (errors.length > 0) {
    throw new Error(errors.map((e) => e.formattedMessage).join('\n'));
  }
  const artifacts = {};
  for (const name of contracts) {
    const contract = output.contracts[`${name}.sol`][name];
    artifacts[name] = JSON.stringify({
      contractName: name,
      compiler: `solc ${version}`,
      settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion },
      abi: contract.abi,
      bytecode: '0x' + contract.evm.bytecode.object,
      deployedBytecode: '0x' + contract.evm.deployedBytecode.object,
      immutableReferences: contract.evm.deployedBytecode.immutableReferences,
    }, null, 2) + '\n';
  }
  return artifacts;
}

const check = process.argv.includes('--check');
let stale = 0;
for (const { dir, contracts } of BUILDS) {
  const artifacts = compile(dir, contracts);
  for (const [name, text] of Object.entries(artifacts)) {
    const file = path.join(dir, `${name}.json`);
    const shown = path.relative(here, path.join(dir, name));
    if (check) {
      const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      if (committed !== text) {
        console.error(`${shown}.json differs from a fresh compile of ${shown}.sol`);
        stale += 1;
      } else {
        console.log(`${shown}.json matches ${shown}.sol`);
      }
    } else {
      fs.writeFileSync(file, text);
      console.log(`wrote ${shown}.json`);
    }
  }
}
process.exit(stale === 0 ? 0 : 1);
