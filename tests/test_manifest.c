/* Tests for data/manifest: each manifest form (AudioLDM JSON, JSON lines, CSV), detection
 * by content, path resolution, the deterministic caption-key choice, every per-entry
 * problem skipped with its reason, every unusable manifest refused with the file and line,
 * MagnaTagATune captions, and the UTF-8 check. */
#include <string.h>
#include <sys/stat.h>

#include "data/manifest.h"
#include "tests/test.h"

static void write_text(const char *path, const char *text, size_t n) {
  FILE *f = fopen(path, "wb");
  ASSERT(f, "cannot write %s", path);
  ASSERT(fwrite(text, 1, n, f) == n, "short write %s", path);
  fclose(f);
}
#define WRITE(path, literal) write_text((path), (literal), sizeof(literal) - 1)

/* The skip whose kind is `kind` (the first), or NULL. */
static const ManifestSkip *skip_of(const Manifest *m, const char *kind) {
  for (int i = 0; i < m->n_skips; i++)
    if (!strcmp(m->skips[i].kind, kind)) return &m->skips[i];
  return NULL;
}

static void expect_entry(const Manifest *m, int i, const char *path, const char *caption) {
  ASSERT(i < m->n, "entry %d missing (n = %d)", i, m->n);
  EXPECT(!strcmp(m->entries[i].path, path), "entry %d path '%s', expected '%s'", i, m->entries[i].path, path);
  EXPECT(!strcmp(m->entries[i].caption, caption), "entry %d caption '%s', expected '%s'", i, m->entries[i].caption,
         caption);
}

/* manifest_read must fail with a message containing each of the needles. */
static void expect_refused(const char *path, const char *needle1, const char *needle2) {
  Manifest m = {0};
  McmErr err = {{0}};
  EXPECT(manifest_read(path, &m, &err) == -1, "%s should be refused", path);
  EXPECT_STR_CONTAINS(err.msg, needle1);
  if (needle2) EXPECT_STR_CONTAINS(err.msg, needle2);
  manifest_free(&m);
}

TEST(manifest_audioldm_json) {
  mkdir(TEST_PATH("sub"), 0777);
  const char *path = TEST_PATH("sub/train.json");
  WRITE(path, "{\"data\": [\n"
              "  {\"wav\": \"a.wav\", \"caption\": \"  A calm piano piece. \", \"labels\": \"/m/x\"},\n"
              "  {\"wav\": \"/abs/b.wav\", \"caption_2\": \"second\", \"caption_1\": \"first\"},\n"
              "  {\"caption_x\": \"x\", \"wav\": \"c.wav\", \"caption\": \"plain caption wins\"},\n"
              "  {\"wav\": \"d.wav\", \"caption\": [\"from a list\", \"ignored\"]},\n"
              "  {\"wav\": \"e.wav\"},\n"
              "  {\"wav\": \"f.wav\", \"caption\": \"   \"},\n"
              "  {\"wav\": \"g.wav\", \"caption\": \"bad \xff\xfe bytes\"},\n"
              "  {\"wav\": \"h.wav\", \"caption\": \"nul\\u0000inside\"},\n"
              "  {\"caption\": \"no path\"},\n"
              "  {\"wav\": \"i.wav\", \"caption\": 42},\n"
              "  \"not an object\"\n"
              "]}\n");
  Manifest m = {0};
  McmErr err = {{0}};
  ASSERT(manifest_read(path, &m, &err) == 0, "read: %s", err.msg);
  EXPECT(!strcmp(m.format, "json"), "format %s", m.format);
  char dir_a[600], dir_c[600], dir_d[600];
  snprintf(dir_a, sizeof dir_a, "%s", TEST_PATH("sub/a.wav"));
  snprintf(dir_c, sizeof dir_c, "%s", TEST_PATH("sub/c.wav"));
  snprintf(dir_d, sizeof dir_d, "%s", TEST_PATH("sub/d.wav"));
  EXPECT(m.n == 4, "4 usable entries, got %d", m.n);
  expect_entry(&m, 0, dir_a, "A calm piano piece.");
  expect_entry(&m, 1, "/abs/b.wav", "second"); /* the first key containing "caption", in file order */
  expect_entry(&m, 2, dir_c, "plain caption wins");
  expect_entry(&m, 3, dir_d, "from a list");
  EXPECT(m.n_skips == 7, "7 skips, got %d", m.n_skips);
  const char *kinds[] = {"missing caption", "empty caption", "caption not UTF-8", "caption has NUL", "missing path",
                         "bad entry"};
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) EXPECT(skip_of(&m, kinds[k]), "no skip '%s'", kinds[k]);
  const ManifestSkip *s = skip_of(&m, "caption not UTF-8");
  if (s) {
    EXPECT_STR_CONTAINS(s->where, "g.wav");
    EXPECT_STR_CONTAINS(s->detail, "train.json:data[6]");
  }
  s = skip_of(&m, "missing caption");
  if (s) EXPECT_STR_CONTAINS(s->detail, "data[4]");
  manifest_free(&m);
}

TEST(manifest_json_bare_array_and_relative_to_cwd) {
  /* A manifest named without a directory keeps its paths as written. */
  const char *path = TEST_PATH("list.json");
  WRITE(path, "[{\"path\": \"x.wav\", \"caption\": \"one\"}]");
  Manifest m = {0};
  McmErr err = {{0}};
  ASSERT(manifest_read(path, &m, &err) == 0, "read: %s", err.msg);
  char want[600];
  snprintf(want, sizeof want, "%s", TEST_PATH("x.wav"));
  expect_entry(&m, 0, want, "one");
  manifest_free(&m);
}

TEST(manifest_json_lines) {
  const char *path = TEST_PATH("audiocaps.jsonl");
  WRITE(path, "{\"dataset\": \"audiocaps\", \"location\": \"a.wav\", \"captions\": \"dog barks\"}\n"
              "\n"
              "{\"wav\": \"b.wav\", \"path\": \"ignored.wav\", \"caption\": \"wav key first\"}\r\n"
              "{\"path\": \"c.wav\", \"text\": \"from text\"}\n"
              "{\"path\": \"d.wav\"}\n"
              "{\"path\": \"e.wav\", \"caption\": \"\xc3\x28 broken\"}\n"
              "{\"path\": \"f.wav\", \"caption\": \"caf\xc3\xa9 ok\"}");
  Manifest m = {0};
  McmErr err = {{0}};
  ASSERT(manifest_read(path, &m, &err) == 0, "read: %s", err.msg);
  EXPECT(!strcmp(m.format, "jsonl"), "format %s", m.format);
  ASSERT(m.n == 4, "4 entries, got %d", m.n);
  EXPECT_STR_CONTAINS(m.entries[0].path, "/a.wav");
  EXPECT(!strcmp(m.entries[0].caption, "dog barks"), "captions key");
  EXPECT_STR_CONTAINS(m.entries[1].path, "/b.wav");
  EXPECT(!strcmp(m.entries[2].caption, "from text"), "text key");
  EXPECT(!strcmp(m.entries[3].caption, "caf\xc3\xa9 ok"), "UTF-8 kept");
  EXPECT_STR_CONTAINS(m.entries[2].where, "audiocaps.jsonl:4");
  ASSERT(m.n_skips == 2, "2 skips, got %d", m.n_skips);
  EXPECT(!strcmp(m.skips[0].kind, "missing caption"), "%s", m.skips[0].kind);
  EXPECT_STR_CONTAINS(m.skips[0].detail, "audiocaps.jsonl:5");
  EXPECT(!strcmp(m.skips[1].kind, "caption not UTF-8"), "%s", m.skips[1].kind);
  EXPECT_STR_CONTAINS(m.skips[1].detail, "audiocaps.jsonl:6");
  manifest_free(&m);
}

TEST(manifest_csv_rfc4180) {
  const char *path = TEST_PATH("train.csv");
  WRITE(path, "\xEF\xBB\xBFid,Path,caption\r\n"
              "1,a.wav,plain caption\r\n"
              "2,\"b, with comma.wav\",\"She said \"\"hi\"\", then left\"\r\n"
              "3,c.wav,\"two\nlines\"\r\n"
              "\r\n"
              "4,d.wav\r\n"
              "5,e.wav,too,many,fields\r\n"
              "6,,no path\r\n"
              "7,f.wav,\"\xff\"\r\n"
              "8,g.wav,\"\"\r\n"
              "9,h.wav,last line without newline");
  Manifest m = {0};
  McmErr err = {{0}};
  ASSERT(manifest_read(path, &m, &err) == 0, "read: %s", err.msg);
  EXPECT(!strcmp(m.format, "csv"), "format %s", m.format);
  ASSERT(m.n == 4, "4 entries, got %d", m.n);
  EXPECT(!strcmp(m.entries[0].caption, "plain caption"), "'%s'", m.entries[0].caption);
  EXPECT_STR_CONTAINS(m.entries[1].path, "/b, with comma.wav");
  EXPECT(!strcmp(m.entries[1].caption, "She said \"hi\", then left"), "'%s'", m.entries[1].caption);
  EXPECT(!strcmp(m.entries[2].caption, "two\nlines"), "'%s'", m.entries[2].caption);
  EXPECT(!strcmp(m.entries[3].caption, "last line without newline"), "'%s'", m.entries[3].caption);
  EXPECT_STR_CONTAINS(m.entries[3].where, "train.csv:12"); /* the quoted newline counts */
  ASSERT(m.n_skips == 5, "5 skips, got %d", m.n_skips);
  EXPECT(!strcmp(m.skips[0].kind, "missing caption"), "%s", m.skips[0].kind);
  EXPECT_STR_CONTAINS(m.skips[0].detail, "train.csv:7");
  EXPECT(!strcmp(m.skips[1].kind, "bad row"), "%s", m.skips[1].kind);
  EXPECT_STR_CONTAINS(m.skips[1].detail, "5 fields, the header has 3");
  EXPECT(!strcmp(m.skips[2].kind, "missing path"), "%s", m.skips[2].kind);
  EXPECT(!strcmp(m.skips[3].kind, "caption not UTF-8"), "%s", m.skips[3].kind);
  EXPECT(!strcmp(m.skips[4].kind, "empty caption"), "%s", m.skips[4].kind);
  manifest_free(&m);
}

TEST(manifest_unusable_files_are_refused_with_file_and_line) {
  expect_refused(TEST_PATH("missing.json"), "missing.json", "cannot open");
  expect_refused(test_tmpdir(), "is a directory", NULL);
  const char *p = TEST_PATH("empty.csv");
  WRITE(p, "  \n\n");
  expect_refused(p, "empty.csv", "is empty");
  p = TEST_PATH("broken.json");
  WRITE(p, "{\"data\": [\n  {\"wav\": \"a.wav\", \"caption\": \"x\"},\n  {\"wav\": \"b.wav\" \"caption\": \"y\"}\n]}\n");
  expect_refused(p, "broken.json", "line 3");
  p = TEST_PATH("nodata.json");
  WRITE(p, "{\"items\": []}");
  expect_refused(p, "nodata.json", "\"data\"");
  p = TEST_PATH("broken.jsonl");
  WRITE(p, "{\"wav\": \"a.wav\", \"caption\": \"x\"}\n{\"wav\": \"b.wav\", \"caption\": \"y\"}\n{\"wav\": oops}\n");
  expect_refused(p, "broken.jsonl", "line 3");
  p = TEST_PATH("noheader.csv");
  WRITE(p, "a.wav,a caption\nb.wav,another\n");
  expect_refused(p, "noheader.csv", "header");
  p = TEST_PATH("list.lst");
  WRITE(p, "a.wav|a caption\n");
  expect_refused(p, "list.lst", "path column");
  p = TEST_PATH("unclosed.csv");
  WRITE(p, "path,caption\na.wav,fine\nb.wav,\"never closed\nc.wav,x\n");
  expect_refused(p, "unclosed.csv", "line 3");
  p = TEST_PATH("strayquote.csv");
  WRITE(p, "path,caption\na.wav,say \"hi\"\n");
  expect_refused(p, "strayquote.csv", "line 2");
  p = TEST_PATH("binary.bin");
  WRITE(p, "\x00\x01\x02\xff\xfe garbage\n");
  expect_refused(p, "binary.bin", "not AudioLDM JSON, JSON lines or CSV");
}

TEST(manifest_reads_append) {
  const char *a = TEST_PATH("a.csv"), *b = TEST_PATH("b.jsonl");
  WRITE(a, "path,caption\na.wav,first\n");
  WRITE(b, "{\"path\": \"b.wav\", \"caption\": \"second\"}\n");
  Manifest m = {0};
  McmErr err = {{0}};
  ASSERT(manifest_read(a, &m, &err) == 0 && manifest_read(b, &m, &err) == 0, "%s", err.msg);
  EXPECT(m.n == 2, "both files' entries, got %d", m.n);
  manifest_free(&m);
}

TEST(manifest_mtt_caption_template) {
  const char *t1[] = {"guitar", "classical", "slow"};
  char *c = mtt_caption(t1, 3);
  EXPECT(!strcmp(c, "A classical piece with guitar, slow."), "'%s'", c);
  free(c);
  const char *t2[] = {"techno", "beat", "fast", "no vocals"};
  c = mtt_caption(t2, 4);
  EXPECT(!strcmp(c, "A techno piece with beats, fast, no vocals."), "'%s'", c);
  free(c);
  /* Synonyms collapse, voices combine, a positive voice tag wins over "no vocal", "no X"
   * becomes "without X", unknown tags are kept, "An" before a vowel. */
  const char *t3[] = {"ambient", "classic", "classical", "female", "male vocal", "choir", "no vocal",
                      "no piano", "strings", "string", "soft", "quiet", "zither-ish"};
  c = mtt_caption(t3, 13);
  EXPECT(!strcmp(c, "An ambient and classical piece with strings, soft, quiet, male and female vocals and a choir, "
                    "without piano, tagged zither-ish."),
         "'%s'", c);
  free(c);
  const char *t4[] = {"loud"};
  c = mtt_caption(t4, 1);
  EXPECT(!strcmp(c, "A piece, loud."), "'%s'", c);
  free(c);
  EXPECT(mtt_caption(NULL, 0) == NULL, "no tags, no caption");
  /* Deterministic: the same tags give the same text. */
  char *a = mtt_caption(t3, 13), *b = mtt_caption(t3, 13);
  EXPECT(!strcmp(a, b), "same caption twice");
  free(a);
  free(b);
}

TEST(manifest_mtt_annotations) {
  mkdir(TEST_PATH("mtt"), 0777);
  const char *p = TEST_PATH("mtt/annotations_final.csv");
  /* The real file quotes every field; unquoted rows are accepted too. */
  WRITE(p, "\"clip_id\"\t\"guitar\"\t\"classical\"\t\"slow\"\t\"techno\"\t\"female\"\t\"no vocals\"\t\"mp3_path\"\r\n"
           "\"2\"\t\"1\"\t\"1\"\t\"1\"\t\"0\"\t\"0\"\t\"0\"\t\"f/bach-01-aria-30-59.mp3\"\r\n"
           "\"6\"\t\"0\"\t\"0\"\t\"0\"\t\"0\"\t\"0\"\t\"0\"\t\"f/untagged.mp3\"\r\n"
           "10\t0\t0\t0\t1\t0\t1\tc/techno.mp3\n"
           "11\t0\t2\t0\t1\t0\t1\tc/bad.mp3\n"
           "12\t0\t1\n"
           "13\t0\t0\t1\t0\t1\t0\t\n");
  Manifest m = {0};
  McmErr err = {{0}};
  ASSERT(manifest_read_mtt(p, &m, &err) == 0, "read: %s", err.msg);
  EXPECT(!strcmp(m.format, "mtt"), "format %s", m.format);
  ASSERT(m.n == 2, "2 entries, got %d", m.n);
  char want[600];
  snprintf(want, sizeof want, "%s", TEST_PATH("mtt/f/bach-01-aria-30-59.mp3"));
  expect_entry(&m, 0, want, "A classical piece with guitar, slow.");
  snprintf(want, sizeof want, "%s", TEST_PATH("mtt/c/techno.mp3"));
  expect_entry(&m, 1, want, "A techno piece, no vocals.");
  ASSERT(m.n_skips == 4, "4 skips, got %d", m.n_skips);
  EXPECT(!strcmp(m.skips[0].kind, "no tags"), "%s", m.skips[0].kind);
  EXPECT_STR_CONTAINS(m.skips[0].detail, "annotations_final.csv:3");
  EXPECT(!strcmp(m.skips[1].kind, "bad row"), "%s", m.skips[1].kind);
  EXPECT_STR_CONTAINS(m.skips[1].detail, "'classical' is neither 0 nor 1");
  EXPECT(!strcmp(m.skips[2].kind, "bad row"), "%s", m.skips[2].kind);
  EXPECT(!strcmp(m.skips[3].kind, "missing path"), "%s", m.skips[3].kind);
  manifest_free(&m);

  const char *bad = TEST_PATH("not_mtt.csv");
  WRITE(bad, "path,caption\na.wav,x\n");
  Manifest m2 = {0};
  EXPECT(manifest_read_mtt(bad, &m2, &err) == -1, "a CSV manifest is not MTT annotations");
  EXPECT_STR_CONTAINS(err.msg, "clip_id");
  EXPECT(manifest_read_mtt(TEST_PATH("none.csv"), &m2, &err) == -1, "missing file");
  EXPECT_STR_CONTAINS(err.msg, "cannot open");
  manifest_free(&m2);
}

TEST(manifest_utf8_valid) {
  struct {
    const char *s;
    bool ok;
  } cases[] = {
      {"plain ascii", true},
      {"caf\xc3\xa9", true},
      {"\xe2\x82\xac euro", true},
      {"\xf0\x9f\x8e\xb5 note", true},
      {"\xef\xbf\xbf", true},           /* U+FFFF: a noncharacter, still well-formed */
      {"\xc3", false},                  /* cut short */
      {"\xc0\xaf", false},              /* overlong '/' */
      {"\xe0\x80\xaf", false},          /* overlong, 3 bytes */
      {"\xf0\x80\x80\xaf", false},      /* overlong, 4 bytes */
      {"\xed\xa0\x80", false},          /* surrogate U+D800 */
      {"\xf4\x90\x80\x80", false},      /* U+110000 */
      {"\xf8\x88\x80\x80\x80", false},  /* 5-byte form */
      {"\x80 lone continuation", false},
      {"\xe2\x82 short", false},
      {"\xff", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    EXPECT(utf8_valid(cases[i].s, strlen(cases[i].s)) == cases[i].ok, "case %zu", i);
  EXPECT(utf8_valid("a\0b", 3), "NUL is well-formed UTF-8 (callers reject it separately)");
}
