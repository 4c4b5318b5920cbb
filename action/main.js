'use strict';
// Entry point of the tokenmint GitHub Action (runs.main in action.yml). The runner starts
// it as `node action/main.js` with the inputs in INPUT_* variables.

require('./lib/run').run();
