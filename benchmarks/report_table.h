// The tables dptrain-bench prints and writes: a text table on stdout, and
// NAME.json (a BenchTable message), NAME.csv and NAME.svg (a bar chart of
// one column, one bar per row) in the output folder, each written
// atomically; every table names the CPU and oneDNN's ISA.
#pragma once

#include <string>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain::bench {

class Table {
 public:
  Table(std::string benchmark, std::vector<std::string> columns, std::string plotted,
        std::string note);
  void add(std::vector<std::string> cells);
  std::string text() const;
  std::string csv() const;
  std::string svg() const;
  // Prints the text and writes the three files into `dir` (created).
  void emit(const std::string& dir) const;
  const BenchTable& message() const { return table_; }

 private:
  BenchTable table_;
};

std::string fixed(double value, int digits);

}  // namespace dptrain::bench
