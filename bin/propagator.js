#!/usr/bin/env node
// The compiled program lives in dist/ (built by `npm install` through the prepare script).
import { main } from '../dist/cli/propagator.js';

process.exitCode = await main(process.argv.slice(2));
