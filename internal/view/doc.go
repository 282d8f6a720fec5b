// Package view is what a person sees of a running kforward: the table of
// forwards (`kforward status`, and the live view of `kforward run` in a
// terminal), the env-file lines of the bound ports, and a compact log
// format for the lines that scroll above the live table.
//
// It is a thin layer over runner.Snapshot and forward.Status: it reads
// them, never changes them, and keeps no state of its own but the byte
// history that rates need (Rates).
//
// Invariants:
//   - Table is a pure function of its arguments: the clock is a parameter,
//     so the same snapshot renders the same text (the golden tests rely on
//     it). No line it returns is wider than the width it is given (20 at
//     least); what does not fit is shortened, never wrapped.
//   - With Options.Color false no escape code is written at all; with it,
//     only the 16 basic ANSI colours and bold/faint are used, so a
//     terminal's theme applies and downsampling has nothing to lose.
//   - Env's output depends only on the forwards' names and bound ports,
//     in a fixed order, so rewriting an unchanged ports file is a no-op.
//     When two lines would set the same variable, the first in that order
//     keeps it and EnvCollisions names the others.
//   - Live runs inline, never on the alternate screen: log lines printed
//     through its Writer scroll above the table and stay in the terminal's
//     scrollback, and so does the last table when it ends. Keys never end
//     it; only its context does.
package view
