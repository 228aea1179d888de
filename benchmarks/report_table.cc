#include "benchmarks/report_table.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "core/engine.h"
#include "core/file_io.h"

namespace dptrain::bench {

std::string fixed(double value, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, value);
  return buf;
}

Table::Table(std::string benchmark, std::vector<std::string> columns, std::string plotted,
             std::string note) {
  table_.set_benchmark(std::move(benchmark));
  table_.set_cpu(cpu_model_name());
  table_.set_isa(effective_isa_name());
  for (std::string& c : columns) table_.add_columns(std::move(c));
  table_.set_plotted(std::move(plotted));
  table_.set_note(std::move(note));
}

void Table::add(std::vector<std::string> cells) {
  if (static_cast<int>(cells.size()) != table_.columns_size()) {
    throw std::logic_error("bench table " + table_.benchmark() + ": a row of " +
                           std::to_string(cells.size()) + " cells");
  }
  BenchRow* row = table_.add_row();
  for (std::string& c : cells) row->add_cell(std::move(c));
}

std::string Table::text() const {
  std::vector<size_t> width;
  for (const std::string& c : table_.columns()) width.push_back(c.size());
  for (const BenchRow& r : table_.row())
    for (int i = 0; i < r.cell_size(); ++i)
      width[static_cast<size_t>(i)] = std::max(width[static_cast<size_t>(i)], r.cell(i).size());
  auto line = [&](const auto& cells) {
    std::string out;
    for (int i = 0; i < cells.size(); ++i) {
      const std::string& c = cells.Get(i);
      out += (i ? "  " : "") + std::string(width[static_cast<size_t>(i)] - c.size(), ' ') + c;
    }
    return out + "\n";
  };
  std::string out = table_.benchmark() + " on " + table_.cpu() + " (" + table_.isa() + ")\n";
  out += line(table_.columns());
  for (const BenchRow& r : table_.row()) out += line(r.cell());
  return out + table_.note() + "\n";
}

std::string Table::csv() const {
  auto line = [](const auto& cells) {
    std::string out;
    for (int i = 0; i < cells.size(); ++i) out += (i ? "," : "") + cells.Get(i);
    return out + "\n";
  };
  std::string out = line(table_.columns());
  for (const BenchRow& r : table_.row()) out += line(r.cell());
  return out;
}

namespace {
// A plotted cell's value; a cell that is not a number ("n/a") gets no bar.
double bar_value(const std::string& cell) {
  char* end = nullptr;
  const double v = std::strtod(cell.c_str(), &end);
  return end != cell.c_str() && std::isfinite(v) ? v : 0;
}
}  // namespace

std::string Table::svg() const {
  int value_column = -1;
  for (int i = 0; i < table_.columns_size(); ++i)
    if (table_.columns(i) == table_.plotted()) value_column = i;
  if (value_column < 0) throw std::logic_error("bench table: no column " + table_.plotted());
  double top = 0;
  for (const BenchRow& r : table_.row()) top = std::max(top, bar_value(r.cell(value_column)));
  constexpr int kBar = 22, kLabel = 260, kWidth = 760, kChart = kWidth - kLabel - 90;
  const int height = 50 + kBar * table_.row_size() + 20;
  std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(kWidth) +
                    "\" height=\"" + std::to_string(height) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out += "<text x=\"10\" y=\"20\" font-size=\"14\">" + table_.benchmark() + ": " +
         table_.plotted() + "</text>\n<text x=\"10\" y=\"38\" fill=\"#555\">" + table_.cpu() +
         "</text>\n";
  for (int i = 0; i < table_.row_size(); ++i) {
    const BenchRow& r = table_.row(i);
    std::string label;
    for (int c = 0; c < r.cell_size(); ++c)
      if (c != value_column) label += (label.empty() ? "" : " ") + r.cell(c);
    const double v = bar_value(r.cell(value_column));
    const int y = 50 + kBar * i;
    const int w = top > 0 ? static_cast<int>(kChart * v / top) : 0;
    out += "<text x=\"10\" y=\"" + std::to_string(y + 15) + "\">" + label + "</text>\n";
    out += "<rect x=\"" + std::to_string(kLabel) + "\" y=\"" + std::to_string(y + 3) +
           "\" width=\"" + std::to_string(w) + "\" height=\"" + std::to_string(kBar - 6) +
           "\" fill=\"#4878d0\"/>\n";
    out += "<text x=\"" + std::to_string(kLabel + w + 6) + "\" y=\"" + std::to_string(y + 15) +
           "\">" + r.cell(value_column) + "</text>\n";
  }
  return out + "</svg>\n";
}

void Table::emit(const std::string& dir) const {
  std::printf("%s", text().c_str());
  std::filesystem::create_directories(dir);
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(table_, &json, options);
  const std::string base = dir + "/" + table_.benchmark();
  write_file_atomically(base + ".json", json);
  write_file_atomically(base + ".csv", csv());
  write_file_atomically(base + ".svg", svg());
  std::printf("written: %s.{json,csv,svg}\n", base.c_str());
}

}  // namespace dptrain::bench
