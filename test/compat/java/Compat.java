// Compatibility matrix, pgjdbc (issue 23 item 1). Usage: java -cp pgjdbc.jar:. Compat URL USER PASSWORD SCHEMA
// Prints lines "rows <json-ish>", "meta <name> ok", "denied <sqlstate> <message>", "after 1".
import java.sql.*;
import java.util.*;

public class Compat {
  public static void main(String[] a) throws Exception {
    String schema = a[3];
    Properties p = new Properties();
    p.setProperty("user", a[1]);
    p.setProperty("password", a[2]);
    p.setProperty("prepareThreshold", "5");
    try (Connection c = DriverManager.getConnection(a[0], p)) {
      DatabaseMetaData md = c.getMetaData();
      count("getTables", md.getTables(null, schema, "%", null));
      count("getColumns", md.getColumns(null, schema, "customers", "%"));
      count("getPrimaryKeys", md.getPrimaryKeys(null, schema, "customers"));
      count("getIndexInfo", md.getIndexInfo(null, schema, "customers", false, false));
      count("getFunctions", md.getFunctions(null, schema, "%"));
      count("getTablePrivileges", md.getTablePrivileges(null, schema, "customers"));
      count("getTypeInfo", md.getTypeInfo());
      String q = "SELECT id, name, email, ssn FROM " + schema + ".customers WHERE id > ? ORDER BY id";
      try (PreparedStatement ps = c.prepareStatement(q)) {
        // past prepareThreshold (5) pgjdbc switches to a named server-side statement
        for (int i = 0; i < 7; i++) {
          ps.setInt(1, 0);
          try (ResultSet rs = ps.executeQuery()) {
            ResultSetMetaData rm = rs.getMetaData();
            StringBuilder sb = new StringBuilder("rows");
            for (int col = 1; col <= 4; col++) sb.append(' ').append(rm.getColumnName(col)).append('/').append(rm.getTableName(col));
            while (rs.next()) sb.append(" | ").append(rs.getInt(1)).append(',').append(rs.getString(2)).append(',').append(rs.getString(3)).append(',').append(rs.getString(4));
            System.out.println(sb);
          }
        }
      }
      try (Statement st = c.createStatement()) {
        st.addBatch("UPDATE " + schema + ".victim SET id = id");
        st.addBatch("INSERT INTO " + schema + ".victim SELECT 1 WHERE false");
        System.out.println("batch " + st.executeBatch().length);
        try {
          st.execute("DROP TABLE " + schema + ".victim");
        } catch (SQLException e) {
          System.out.println("denied " + e.getSQLState() + " " + e.getMessage().replaceFirst("^ERROR: ", ""));
        }
        try (ResultSet rs = st.executeQuery("SELECT 1")) { rs.next(); System.out.println("after " + rs.getInt(1)); }
      }
    }
  }
  static void count(String name, ResultSet rs) throws SQLException {
    int n = 0;
    while (rs.next()) n++;
    rs.close();
    System.out.println("meta " + name + " " + n);
  }
}
