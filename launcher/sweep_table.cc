#include "launcher/sweep_table.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>

namespace dptrain::launcher {
namespace {

std::string pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

bool runs(const std::string& state) { return state == "running" || state == "paused"; }

}  // namespace

SweepTable::SweepTable(std::FILE* out, bool live, std::string metric,
                       std::vector<std::string> paths, int max_epochs, int rows, int columns)
    : out_(out),
      live_(live),
      metric_(std::move(metric)),
      paths_(std::move(paths)),
      max_epochs_(max_epochs),
      height_(rows),
      width_(columns) {
  winsize ws{};
  const bool known = ::ioctl(::fileno(out_), TIOCGWINSZ, &ws) == 0;
  if (height_ <= 0) height_ = known && ws.ws_row > 0 ? ws.ws_row : 24;
  if (width_ <= 0) width_ = known && ws.ws_col > 0 ? ws.ws_col : 80;
}

void SweepTable::print(const std::string& line) {
  if (live_) erase();
  std::fprintf(out_, "%s\n", line.c_str());
  if (live_) draw();
  std::fflush(out_);
}

void SweepTable::update(std::vector<SweepTableRow> rows) {
  rows_ = std::move(rows);
  dirty_ = true;
}

void SweepTable::refresh() {
  if (!live_ || !dirty_ || Clock::now() - last_draw_ < std::chrono::milliseconds(500)) return;
  erase();
  draw();
  std::fflush(out_);
}

void SweepTable::clear() {
  rows_.clear();
  dirty_ = false;
  if (!live_) return;
  erase();
  std::fflush(out_);
}

std::vector<std::string> SweepTable::lines() const {
  // Room for the header, the "more" line and a line for the cursor, with
  // some of the event lines above kept in view.
  const size_t room = static_cast<size_t>(std::max(3, height_ - 6));
  std::vector<const SweepTableRow*> shown;
  for (const auto& r : rows_)
    if (runs(r.state)) shown.push_back(&r);
  for (const auto& r : rows_)
    if (!runs(r.state)) shown.push_back(&r);
  const size_t left_out = shown.size() > room ? shown.size() - room : 0;
  shown.resize(shown.size() - left_out);
  std::sort(shown.begin(), shown.end(),
            [](const SweepTableRow* a, const SweepTableRow* b) { return a->trial < b->trial; });

  std::vector<size_t> width;
  for (const auto& p : paths_) width.push_back(std::max<size_t>(p.size(), 8));
  const size_t metric_width = std::max<size_t>(metric_.size(), 8);
  std::string header =
      "trial  " + pad("state", 9) + pad("epoch", 8) + pad(metric_, metric_width + 2);
  for (size_t i = 0; i < paths_.size(); ++i) header += pad(paths_[i], width[i] + 2);
  std::vector<std::string> out{header};
  for (const SweepTableRow* r : shown) {
    char objective[32] = "";
    if (r->objective) std::snprintf(objective, sizeof objective, "%.4f", *r->objective);
    std::string line = pad(std::to_string(r->trial), 7) + pad(r->state, 9) +
                       pad(std::to_string(r->epoch) + "/" + std::to_string(max_epochs_), 8) +
                       pad(objective, metric_width + 2);
    for (size_t i = 0; i < paths_.size(); ++i)
      line += pad(i < r->values.size() ? r->values[i] : "", width[i] + 2);
    out.push_back(line);
  }
  if (left_out > 0) out.push_back("... " + std::to_string(left_out) + " more trials");
  // A line that wrapped would take two rows and throw off the redraw.
  for (std::string& l : out) {
    if (static_cast<int>(l.size()) >= width_)
      l.resize(static_cast<size_t>(std::max(1, width_ - 1)));
    while (!l.empty() && l.back() == ' ') l.pop_back();
  }
  return out;
}

void SweepTable::draw() {
  if (rows_.empty()) return;
  const std::vector<std::string> text = lines();
  for (const std::string& l : text) std::fprintf(out_, "%s\n", l.c_str());
  drawn_ = static_cast<int>(text.size());
  dirty_ = false;
  last_draw_ = Clock::now();
}

void SweepTable::erase() {
  // Up to the table's first line, then clear to the end of the screen.
  if (drawn_ > 0) std::fprintf(out_, "\033[%dF\033[J", drawn_);
  drawn_ = 0;
}

}  // namespace dptrain::launcher
